// A chart's text outside its canvases: the legend (each signal's value, unit, limit
// level, clock note, staleness), the cursor's time, "no data here", the plot's
// accessible name. Changed only where the text differs, and the legend at most 10 times
// a second: each change costs the page style, layout and paint.

import { app } from "./app.js";
import { clock, cursorLabel, DAY, fmt, limitLevel, valueAtColumn } from "./chartmath.js";

const STALE_MS = 3000;

/** "no data here" over a window without a sample (or "loading" while the cache is
 * asked), instead of an empty 0..1 chart. */
export function showEmpty(chart, any) {
  let text = "";
  if (any) { /* nothing to say */ }
  else if (chart.paused) text = chart.settled() ? "no data here" : "loading…";
  else {
    const latest = Math.max(0, ...chart.items.map((i) => app.conn.data.get(i.id)?.latestMs || 0));
    text = latest ? `no data since ${cursorLabel(latest, DAY).slice(0, -4)}` : "waiting for data";
  }
  if (chart.empty.textContent !== text) chart.empty.textContent = text;
  if (chart.empty.hidden !== !text) chart.empty.hidden = !text;
}

/** The cursor's time, the legend's values (those under the cursor, else the latest)
 * and the plot's name, for the frame of [t0, t1] over ``w`` CSS px, ``W`` columns. */
export function updateLegend(chart, now, t0, t1, w, W) {
  const cursorTime = chart.cursorX === null || chart.cursorX < 0 || chart.cursorX > w ? null
    : t0 + (chart.cursorX / w) * (t1 - t0);
  const cursor = chart.cursor || (chart.cursor = chart.querySelector(".chart-cursor"));
  if (cursor.hidden !== (cursorTime === null)) cursor.hidden = cursorTime === null;
  if (cursorTime !== null) {
    cursor.style.left = `${chart.cursorX}px`;
    cursor.textContent = cursorLabel(cursorTime, t1 - t0);
  }
  updateLabel(chart, now, t0, t1);
  // Text changes cost style and layout: at most 10 times a second, only what changed.
  if (cursorTime === null && now - (chart.legendAt || 0) < 100) return;
  // the charts' legends on different frames, not all in one (its time spikes)
  chart.legendAt = chart.legendAt ? now : now - Math.random() * 100;
  // the value under the cursor is the one the trace shows there, whatever it came from
  const x = cursorTime === null ? -1 : Math.min(W - 1, Math.floor((chart.cursorX / w) * W));
  chart.items.forEach((item, slot) => {
    const d = app.conn.data.get(item.id);
    const info = app.conn.describe(item.id);
    let value = cursorTime === null ? (d ? d.latest : NaN)
      : valueAtColumn(chart.frameCols[slot], x, (t1 - t0) / W);
    const level = limitLevel(info && info.limits, value);
    if (item.level !== level) {
      item.el.classList.remove("warn", "alarm");
      if (level) item.el.classList.add(level);
      item.level = level;
    }
    value = fmt(value);
    if (item.out.textContent !== value) {
      item.out.textContent = value;
      // a box of fixed size, wider for a long value (rare): its text moves nothing else
      const wide = value.length > 10;
      if (item.wide !== wide) item.out.classList.toggle("wide", (item.wide = wide));
    }
    const unit = info ? info.unit : "";
    if (item.unit.textContent !== unit) {
      item.unit.textContent = unit;
      item.el.title = info ? `${info.doc || item.id} (${info.type})` : `${item.id}: unknown signal`;
    }
    const unknown = app.conn.channels.length > 0 && !info;
    if (item.unknown !== unknown) item.el.classList.toggle("unknown", (item.unknown = unknown));
    const note = clockNote(info && info.channel);
    if (item.clock.textContent !== note) {
      item.clock.textContent = note;
      item.clock.title = note.startsWith("replay")
        ? "a replay of cached data: drawn as it is replayed; the time is the replayed one"
        : note && "the source's clock is off: plotted on the time it arrived";
    }
    const stale = !d || now - d.latestMs > STALE_MS;
    if (item.stale !== stale) item.el.classList.toggle("stale", (item.stale = stale));
  });
}

/** The plot's accessible name: its signals and what it shows (at most once a second:
 * a screen reader may read a focused element's new name). */
export function updateLabel(chart, now, t0, t1) {
  if (now - (chart.labelledAt || 0) < 1000) return;
  chart.labelledAt = now;
  const title = chart.getAttribute("title");
  const what = `${title ? `${title}: ` : ""}chart of ${chart.signals.join(", ")}`;
  const seconds = (t1 - t0) / 1000;
  const width = seconds >= 86400 ? `${(seconds / 86400).toFixed(1)} days`
    : seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h`
    : seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${+seconds.toFixed(3)} s`;
  const shown = chart.paused
    ? `paused, ${width} from ${cursorLabel(t0, t1 - t0).slice(0, -4)}; arrow keys pan, + and - zoom, Escape resumes`
    : `live, the last ${width}; arrow keys pause and pan`;
  const label = `${what}, ${shown}`;
  if (chart.canvas.getAttribute("aria-label") !== label) chart.canvas.setAttribute("aria-label", label);
}

/** "clock 3.0 h behind" for a channel the server plots on receive time, else "". */
export function clockNote(channel) {
  if (channel && channel.replay) {
    const speed = channel.replay.speed ? `×${channel.replay.speed}` : "at full speed";
    return `replay ${speed} · ${clock(channel.replay.at_ms).slice(0, 8)}`;
  }
  if (!channel || !channel.clock_shifted) return "";
  const seconds = Math.abs(channel.clock_offset_ms) / 1000;
  const size = seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h`
    : seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(1)} s`;
  return `clock ${size} ${channel.clock_offset_ms < 0 ? "behind" : "ahead"}`;
}

