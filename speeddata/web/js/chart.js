// <sd-chart signals="motor.speed motor.torque" window="60" [min=".." max=".."]>
// A canvas stripchart. Per pixel column it draws the min..max envelope of the buckets
// that fall in it, so a frame costs the same whatever the data rate, and a one-sample
// spike stays visible. Live charts scroll with the server clock; a paused chart can be
// panned (drag) and zoomed (wheel) over the history.

import { app } from "./app.js";
import { autoRange, clock, fmt, foldColumns, limitLevel, newColumns, niceTicks, plotColumns,
         tickLabel, timeStep, wallClock } from "./chartmath.js";
import { tagRange } from "./mark.js";

/** A time tick's label: ms below a second, the date too from 6-hour steps (a day's window
 * crosses midnight). */
function timeLabel(t, step) {
  const text = clock(t);
  if (step < 1000) return text.slice(3, 12);
  if (step < 3600000) return text.slice(0, 8);
  const d = wallClock(t);
  const day = `${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  return step >= 21600000 ? `${day} ${text.slice(0, 5)}` : text.slice(0, 5);
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
export const WINDOWS = [[10, "10 s"], [60, "1 min"], [600, "10 min"]];
const STALE_MS = 3000;

const TIME_STRIP = 16;  // CSS px below the plot for the time labels
const BANDS = { warn: "rgba(245, 197, 24, 0.16)", alarm: "rgba(214, 39, 40, 0.14)" };

export class SdChart extends HTMLElement {
  connectedCallback() {
    if (this.built) { app.layoutChanged(); return; }
    this.built = true;
    this.paused = false;
    this.cursorX = null;
    this.innerHTML = `
      <div class="chart-head">
        <span class="chart-title"></span>
        <select class="chart-window" title="time window"></select>
        <button class="chart-scale" title="autoscale or fixed range">auto</button>
        <button class="chart-pause" title="pause: then drag to pan, wheel to zoom, shift-drag to tag a range">pause</button>
        <button class="chart-remove" title="remove this chart">×</button>
      </div>
      <div class="chart-body"><canvas></canvas><div class="chart-cursor"></div><div class="chart-select" hidden></div></div>
      <div class="chart-legend"></div>`;
    this.canvas = this.querySelector("canvas");
    this.legend = this.querySelector(".chart-legend");
    const select = this.querySelector(".chart-window");
    for (const [seconds, label] of WINDOWS) select.add(new Option(label, String(seconds)));
    select.value = String(this.windowSeconds);
    if (select.value !== String(this.windowSeconds)) {
      select.add(new Option(`${this.windowSeconds} s`, String(this.windowSeconds)));
      select.value = String(this.windowSeconds);
    }
    select.onchange = () => { this.setAttribute("window", select.value); this.span = null; app.layoutChanged(); };
    this.querySelector(".chart-pause").onclick = () => this.setPaused(!this.paused);
    this.querySelector(".chart-scale").onclick = () => this.toggleScale();
    this.querySelector(".chart-remove").onclick = () => { this.remove(); app.layoutChanged(); };
    this.bindPointer();
    this.buildLegend();
    this.updateScaleButton();
    app.register(this);
  }

  disconnectedCallback() { app.unregister(this); }

  static get observedAttributes() { return ["signals", "window", "min", "max"]; }
  attributeChangedCallback() { if (this.built) { this.buildLegend(); this.updateScaleButton(); } }

  get signals() { return (this.getAttribute("signals") || "").split(/[\s,]+/).filter(Boolean); }
  get windowSeconds() { return Number(this.getAttribute("window")) || 60; }
  get fixedRange() {
    const lo = parseFloat(this.getAttribute("min")), hi = parseFloat(this.getAttribute("max"));
    return Number.isFinite(lo) && Number.isFinite(hi) && hi > lo ? [lo, hi] : null;
  }

  toggleScale() {
    if (this.fixedRange) { this.removeAttribute("min"); this.removeAttribute("max"); }
    else if (this.lastRange) {
      this.setAttribute("min", fmt(this.lastRange[0])); this.setAttribute("max", fmt(this.lastRange[1]));
    }
    app.layoutChanged();
  }

  updateScaleButton() {
    const b = this.querySelector(".chart-scale");
    if (b) b.textContent = this.fixedRange ? "fixed" : "auto";
  }

  setPaused(paused) {
    this.paused = paused;
    this.classList.toggle("paused", paused);
    this.querySelector(".chart-pause").textContent = paused ? "resume" : "pause";
    if (paused) {
      const now = app.conn.now();
      this.span = [now - this.windowSeconds * 1000, now];
    } else {
      this.span = null;
    }
  }

  buildLegend() {
    this.legend.innerHTML = "";
    this.items = this.signals.map((id, i) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.style.setProperty("--color", COLORS[i % COLORS.length]);
      item.innerHTML = `<i></i><b></b> <output>–</output> <small></small> <em class="clock"></em>`;
      item.querySelector("b").textContent = id;
      this.legend.append(item);
      const hex = COLORS[i % COLORS.length];
      const rgba = (0xff << 24 | parseInt(hex.slice(5, 7), 16) << 16 |
                    parseInt(hex.slice(3, 5), 16) << 8 | parseInt(hex.slice(1, 3), 16)) >>> 0;
      return { id, el: item, color: hex, rgba, out: item.querySelector("output"),
               unit: item.querySelector("small"), clock: item.querySelector(".clock") };
    });
    this.querySelector(".chart-title").textContent = this.getAttribute("title") || "";
    this.cols = null;
  }

  bindPointer() {
    const body = this.querySelector(".chart-body");
    const band = this.querySelector(".chart-select");
    let drag = null, select = null;
    const timeAt = (x) => {
      const [t0, t1] = this.span, w = this.canvas.clientWidth;
      return t0 + (Math.min(Math.max(x, 0), w) / w) * (t1 - t0);
    };
    body.addEventListener("pointermove", (e) => {
      const rect = this.canvas.getBoundingClientRect();
      this.cursorX = e.clientX - rect.left;
      if (select) {
        const [a, b] = [select.x, this.cursorX].sort((p, q) => p - q);
        band.style.left = `${Math.max(a, 0)}px`;
        band.style.width = `${Math.min(b, rect.width) - Math.max(a, 0)}px`;
        return;
      }
      if (drag && this.paused) {
        const msPerPx = (drag.span[1] - drag.span[0]) / rect.width;
        const shift = (drag.x - e.clientX) * msPerPx;
        this.span = [drag.span[0] + shift, drag.span[1] + shift];
      }
    });
    body.addEventListener("pointerleave", () => { this.cursorX = null; });
    body.addEventListener("pointerdown", (e) => {
      if (!this.paused) this.setPaused(true);
      body.setPointerCapture(e.pointerId);
      if (e.shiftKey) {  // shift-drag: select a range to tag
        select = { x: e.clientX - this.canvas.getBoundingClientRect().left };
        band.hidden = false;
        band.style.left = `${select.x}px`;
        band.style.width = "0px";
        return;
      }
      drag = { x: e.clientX, span: [...this.span] };
    });
    body.addEventListener("pointerup", async (e) => {
      drag = null;
      if (!select) return;
      const x = e.clientX - this.canvas.getBoundingClientRect().left;
      const [t0, t1] = [timeAt(select.x), timeAt(x)].sort((p, q) => p - q);
      select = null;
      if (t1 - t0 >= 1) {
        const channels = [...new Set(this.signals.map((id) => id.split(".")[0]))];
        await tagRange(t0, t1, channels);
      }
      band.hidden = true;
    });
    body.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (!this.paused) this.setPaused(true);
      const rect = this.canvas.getBoundingClientRect();
      const [t0, t1] = this.span;
      const at = t0 + ((e.clientX - rect.left) / rect.width) * (t1 - t0);
      // between 10 buckets of the finest level and a week (the cache holds the past)
      const levels = app.conn.levels;
      const most = 7 * 86400e3;
      const least = 10 * Math.min(...levels.map((l) => l.width_ms));
      const k = Math.min(Math.max(Math.exp(e.deltaY * 0.002), least / (t1 - t0)),
                         most / (t1 - t0));
      this.span = [at - (at - t0) * k, at + (t1 - at) * k];
    }, { passive: false });
  }

  /** Draw one frame: signals as pixels, then the grid and labels on top. */
  draw(now) {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    const W = Math.round(w * dpr), H = Math.round(h * dpr);
    if (canvas.width !== W || canvas.height !== H || !this.image) {
      canvas.width = W;
      canvas.height = H;
      this.ctx = canvas.getContext("2d");
      this.image = this.ctx.createImageData(W, H);
      this.pixels = new Uint32Array(this.image.data.buffer);
      this.cols = null;
    }
    const [t0, t1] = this.paused && this.span ? this.span : [now - this.windowSeconds * 1000, now];
    if (this.paused) this.fetchPast(t0, t1, W);
    const columns = [];
    let lo = Infinity, hi = -Infinity;
    this.items.forEach((item, i) => {
      const d = app.conn.data.get(item.id);
      const col = d || this.paused ? this.columns(d, t0, t1, W, i) : null;
      columns.push(col);
      if (col) { lo = Math.min(lo, col.lo); hi = Math.max(hi, col.hi); }
    });
    const range = this.fixedRange || (this.autoRange = autoRange(this.autoRange, lo, hi));
    this.lastRange = range;
    const pixels = this.pixels;
    pixels.fill(0);
    // the plot: all but a strip at the bottom that holds the time labels, so no label
    // ever covers a sample
    const ph = h - TIME_STRIP, PH = H - Math.round(TIME_STRIP * dpr);
    this.plotHeight = PH;  // device pixels (read by the browser tests)
    const scale = (PH - 1) / (range[1] - range[0]);
    columns.forEach((col, i) => {
      if (col) plotColumns(pixels, W, PH, col, range[0], scale, this.items[i].rgba);
    });
    const ctx = this.ctx;
    ctx.putImageData(this.image, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const y = (v) => ph - ((v - range[0]) / (range[1] - range[0])) * ph;
    // bands and grid go beneath the traces (as in uPlot and Grafana): a grid line never
    // greys the samples it crosses
    ctx.globalCompositeOperation = "destination-over";
    this.drawGrid(ctx, w, h, ph, t0, t1, range, y);
    this.drawLimits(ctx, w, ph, y);
    ctx.globalCompositeOperation = "source-over";
    this.updateLegend(now, t0, t1, w);
  }

  /** One signal's columns for this frame (see foldColumns), in buffers kept per slot. */
  columns(d, t0, t1, cols, slot) {
    if (!this.cols || this.cols.length !== this.items.length || this.cols[0].count.length !== cols) {
      this.cols = this.items.map(() => newColumns(cols));
    }
    const levels = d ? d.levels.map((s, i) => ({ n: s.n, a: s.a, width: d.widths[i] })) : [];
    const stored = this.paused && this.past && this.past.get(this.items[slot].id);
    const past = stored ? { width: (stored.t1 - stored.t0) / stored.cols, ...stored.rows } : null;
    return foldColumns(levels, past, t0, t1, this.cols[slot]);
  }

  /** A paused chart reaching before the server's memory asks the server for that part
   * of its window from the cache (min, max and last per column), once per view. */
  fetchPast(t0, t1, cols) {
    this.past = this.past || new Map();
    const key = `${Math.round(t0)}|${Math.round(t1)}|${cols}`;
    if (this.pastKey === key || this.pastBusy) return;
    const wanted = this.items.filter((item) => {
      const d = app.conn.data.get(item.id);
      return !d || Math.min(...d.levels.map((l) => l.first)) > t0;
    });
    this.pastKey = key;
    if (!wanted.length) return;
    this.pastBusy = true;
    Promise.all(wanted.map(async (item) => {
      const q = new URLSearchParams({ signal: item.id, start_ms: t0, end_ms: t1, columns: cols });
      const answer = await fetch(`api/range?${q}`);
      if (!answer.ok) throw new Error(`${item.id}: ${(await answer.json()).detail}`);
      const body = await answer.json();
      this.past.set(item.id, { t0, t1, cols, level: body.level, rows: {
        start: body.start_ms, low: body.min, high: body.max, last: body.last } });
    })).catch((err) => {
      app.conn.lastError = `scroll-back: ${err.message}`;
      app.conn.dispatchEvent(new CustomEvent("servererror", { detail: { message: err.message } }));
    }).finally(() => { this.pastBusy = false; });
  }

  /** The cache's last value at or before t (the cursor over scrolled-back data). */
  pastValueAt(id, t) {
    const past = this.paused && this.past && this.past.get(id);
    if (!past) return NaN;
    const start = past.rows.start;
    let lo = 0, hi = start.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (start[mid] <= t) lo = mid + 1; else hi = mid; }
    const width = (past.t1 - past.t0) / past.cols;
    return lo > 0 && t - start[lo - 1] <= width ? past.rows.last[lo - 1] ?? NaN : NaN;
  }

  /** Bands beyond each signal's limits: amber past warn, red past alarm. */
  drawLimits(ctx, w, h, y) {
    const clampY = (v) => Math.min(h, Math.max(0, y(v)));
    for (const item of this.items) {
      const info = app.conn.describe(item.id);
      if (!info || !info.limits) continue;
      for (const name of ["warn", "alarm"]) {
        const b = info.limits[name];
        if (!b) continue;
        ctx.fillStyle = BANDS[name];
        if (b[1] !== null) { const top = clampY(b[1]); ctx.fillRect(0, 0, w, top); }
        if (b[0] !== null) { const bottom = clampY(b[0]); ctx.fillRect(0, bottom, w, h - bottom); }
      }
    }
  }

  drawGrid(ctx, w, h, ph, t0, t1, range, y) {
    ctx.strokeStyle = "rgba(128,128,128,0.25)";
    ctx.fillStyle = "rgba(128,128,128,0.95)";
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    const step = timeStep(t0, t1);
    ctx.beginPath();
    ctx.moveTo(0, ph + 0.5); ctx.lineTo(w, ph + 0.5);
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const x = Math.round(((t - t0) / (t1 - t0)) * w) + 0.5;
      ctx.moveTo(x, 0); ctx.lineTo(x, ph + 4);
      const text = timeLabel(t, step);
      if (x + 2 + ctx.measureText(text).width <= w) ctx.fillText(text, x + 2, h - 3);
    }
    const { step: yStep, ticks } = niceTicks(range[0], range[1], Math.max(2, Math.floor(ph / 40)));
    this.yTicks = ticks.map((v) => tickLabel(v, yStep));  // read by the browser tests
    for (const v of ticks) {
      const py = Math.round(y(v)) + 0.5;
      ctx.moveTo(0, py); ctx.lineTo(w, py);
      ctx.fillText(tickLabel(v, yStep), 2, Math.min(ph - 2, Math.max(10, py - 2)));
    }
    ctx.stroke();
  }

  updateLegend(now, t0, t1, w) {
    const cursorTime = this.cursorX === null ? null : t0 + (this.cursorX / w) * (t1 - t0);
    const cursor = this.querySelector(".chart-cursor");
    cursor.hidden = cursorTime === null;
    if (cursorTime !== null) {
      cursor.style.left = `${this.cursorX}px`;
      cursor.textContent = clock(cursorTime);
    }
    // Text changes cost style and layout: at most 10 times a second, only what changed.
    if (cursorTime === null && now - (this.legendAt || 0) < 100) return;
    this.legendAt = now;
    for (const item of this.items) {
      const d = app.conn.data.get(item.id);
      const info = app.conn.describe(item.id);
      let value = !d ? NaN : cursorTime === null ? d.latest : d.valueAt(cursorTime);
      if (cursorTime !== null && !Number.isFinite(value)) value = this.pastValueAt(item.id, cursorTime);
      const level = limitLevel(info && info.limits, value);
      if (item.level !== level) {
        item.el.classList.remove("warn", "alarm");
        if (level) item.el.classList.add(level);
        item.level = level;
      }
      value = fmt(value);
      if (item.out.value !== value) item.out.value = value;
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
    }
  }
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

customElements.define("sd-chart", SdChart);
