// <sd-chart signals="motor.speed motor.torque" window="60" [min=".." max=".."]>
// A canvas stripchart. Per pixel column it draws the min..max envelope of the buckets
// that fall in it, so a frame costs the same whatever the data rate, and a one-sample
// spike stays visible. Live charts scroll with the server clock; a paused chart can be
// panned (drag) and zoomed (wheel) over the history.

import { app } from "./app.js";
import { tagRange } from "./mark.js";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
export const WINDOWS = [[10, "10 s"], [60, "1 min"], [600, "10 min"]];
const STALE_MS = 3000;

export function fmt(v) {
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return "–";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(3) : v.toFixed(a >= 100 ? 1 : 3);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local wall-clock time HH:MM:SS.mmm (the zone is shown in the page header). */
export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    pad(d.getMilliseconds(), 3);
}

/** Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi], about ``most``. */
export function niceTicks(lo, hi, most = 5) {
  const raw = (hi - lo) / most;
  if (!(raw > 0) || !Number.isFinite(raw)) return { step: 1, ticks: [] };
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
  const ticks = [];
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) ticks.push(k * step);
  return { step, ticks };
}

/** A tick label with as many decimals as the step needs, and no float noise. */
export function tickLabel(v, step) {
  if (Math.abs(v) < step * 1e-6) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || step < 1e-4) return v.toExponential(Math.max(0, Math.round(Math.log10(a / step))));
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

/** Autoscale with hysteresis: keep the current round range while the data fits it and
 * fills more than a third of it, so noise does not make the axis jump. */
export function autoRange(current, lo, hi) {
  if (!(hi >= lo)) { lo = 0; hi = 1; }
  if (hi === lo) { lo -= Math.abs(lo) * 0.05 || 1; hi += Math.abs(hi) * 0.05 || 1; }
  if (current && lo >= current[0] && hi <= current[1] &&
      (hi - lo) > (current[1] - current[0]) / 3) return current;
  const pad = (hi - lo) * 0.05;
  const { step } = niceTicks(lo - pad, hi + pad, 10);
  return [Math.floor((lo - pad) / step) * step, Math.ceil((hi + pad) / step) * step];
}

/** "alarm", "warn" or "" for a value against a signal's limits ({warn, alarm}: [lo, hi],
 * null for an open side), as the server's /api/alarms judges it. */
export function limitLevel(limits, v) {
  if (!limits || typeof v !== "number" || !Number.isFinite(v)) return "";
  for (const name of ["alarm", "warn"]) {
    const b = limits[name];
    if (b && ((b[0] !== null && v < b[0]) || (b[1] !== null && v > b[1]))) return name;
  }
  return "";
}

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
    const scale = (H - 1) / (range[1] - range[0]);
    columns.forEach((col, i) => { if (col) this.plot(pixels, W, H, col, range[0], scale, this.items[i].rgba); });
    const ctx = this.ctx;
    ctx.putImageData(this.image, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const y = (v) => h - ((v - range[0]) / (range[1] - range[0])) * h;
    this.drawLimits(ctx, w, h, y);
    this.drawGrid(ctx, w, h, t0, t1, range, y);
    this.updateLegend(now, t0, t1, w);
  }

  /** One vertical run of pixels per column: from the previous value through min..max;
   * columns without samples between two that have some get the line joining them. */
  plot(pixels, W, H, col, base, scale, rgba) {
    const { low, high, last, count, gap } = col;
    const bottomRow = H - 1;
    // value -> row, clamped, without Math.round (this loop runs W times per signal)
    const row = (v) => {
      const r = bottomRow - (v - base) * scale + 0.5;
      return r <= 0 ? 0 : r >= bottomRow ? bottomRow : r | 0;
    };
    const run = (x, a, b) => {  // rows a..b of column x, either order
      if (a > b) { const t = a; a = b; b = t; }
      for (let i = a * W + x, end = b * W + x; i <= end; i += W) pixels[i] = rgba;
    };
    let prev = -1, prevX = -1;
    for (let x = 0; x < W; x++) {
      if (count[x] === 0) continue;
      let top = row(high[x]);
      let bottom = row(low[x]);
      if (prev >= 0 && !gap[x]) {
        let from = prev;
        if (prevX < x - 1) {  // join across the empty columns, every row of it: no dots
          const span = x - prevX, target = row(0.5 * (low[x] + high[x])) - prev;
          for (let xx = prevX + 1; xx < x; xx++) {
            const r = (prev + (target * (xx - prevX)) / span + 0.5) | 0;
            run(xx, from, r);
            from = r;
          }
        }
        if (from < top) top = from;
        if (from > bottom) bottom = from;
      }
      for (let i = top * W + x, end = bottom * W + x; i <= end; i += W) pixels[i] = rgba;
      prev = row(last[x]);
      prevX = x;
    }
  }

  /** Fold the visible buckets of one signal into per-column min, max and last: the
   * finest level wherever it has data, coarser ones only before it begins. */
  columns(d, t0, t1, cols, slot) {
    const spans = [];  // [level, from, before): bucket starts each level contributes
    let until = Infinity;  // where finer data begins; a coarser bucket must end before it
    for (let level = 0; d && level < d.levels.length && until > t0; level++) {
      const s = d.levels[level];
      if (!s.n) continue;
      const width = d.widths[level];
      spans.push([level, t0 - width, until === Infinity ? Infinity : until - width + 1]);
      until = Math.min(until, s.first);
    }
    const past = this.paused && this.past && this.past.get(this.items[slot].id);
    if (!spans.length && !past) return null;
    if (!this.cols || this.cols.length !== this.items.length || this.cols[0].count.length !== cols) {
      this.cols = this.items.map(() => ({
        low: new Float64Array(cols), high: new Float64Array(cols), last: new Float64Array(cols),
        count: new Uint32Array(cols), gap: new Uint8Array(cols), lo: 0, hi: 0 }));
    }
    const out = this.cols[slot];
    const { low, high, last, count, gap } = out;
    count.fill(0);
    gap.fill(0);
    const k = cols / (t1 - t0);
    let lo = Infinity, hi = -Infinity, prev = -Infinity;
    if (past) {  // the cache, before the server's memory begins
      const width = (past.t1 - past.t0) / past.cols;
      const before = until === Infinity ? Infinity : until - width + 1;
      const { start, low: pl, high: ph, last: pz } = past.rows;
      for (let i = 0; i < start.length && start[i] < before && start[i] <= t1; i++) {
        const x = Math.floor((start[i] + width / 2 - t0) * k);  // by its middle: no rounding slips
        if (x < 0 || x >= cols || pl[i] === null) continue;
        const l = pl[i], u = ph[i];
        if (count[x] === 0) { low[x] = l; high[x] = u; }
        else { if (l < low[x]) low[x] = l; if (u > high[x]) high[x] = u; }
        last[x] = pz[i];
        count[x]++;
        if (start[i] - prev > Math.max(width * 10, 2500) && count[x] === 1) gap[x] = 1;
        prev = start[i];
        if (l < lo) lo = l;
        if (u > hi) hi = u;
      }
    }
    for (let j = spans.length - 1; j >= 0; j--) {  // oldest (coarsest) first
      const [level, from, before] = spans[j];
      const s = d.levels[level], a = s.a, width = d.widths[level];
      for (let i = s.lowerBound(from); i < s.n && a.start[i] < before && a.start[i] <= t1; i++) {
        const x = Math.floor((a.start[i] - t0) * k);
        if (x < 0 || x >= cols) continue;
        const l = a.low[i], u = a.high[i];
        if (count[x] === 0) { low[x] = l; high[x] = u; }
        else { if (l < low[x]) low[x] = l; if (u > high[x]) high[x] = u; }
        last[x] = a.last[i];
        count[x]++;
        // a pause in the data longer than this breaks the line (slow signals are ~1 Hz)
        if (a.start[i] - prev > Math.max(width * 10, 2500) && count[x] === 1) gap[x] = 1;
        prev = a.start[i];
        if (l < lo) lo = l;
        if (u > hi) hi = u;
      }
    }
    out.lo = lo;
    out.hi = hi;
    return out;
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

  drawGrid(ctx, w, h, t0, t1, range, y) {
    ctx.strokeStyle = "rgba(128,128,128,0.25)";
    ctx.fillStyle = "rgba(128,128,128,0.9)";
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    const steps = [100, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000,
                   600000, 900000, 1800000, 3600000, 7200000, 10800000, 21600000, 43200000];
    const step = steps.find((s) => ((t1 - t0) / s) <= 8) || 86400000;
    ctx.beginPath();
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const x = Math.round(((t - t0) / (t1 - t0)) * w) + 0.5;
      ctx.moveTo(x, 0); ctx.lineTo(x, h);
      ctx.fillText(clock(t).slice(step >= 1000 ? 0 : 3, step >= 1000 ? 8 : 12), x + 2, h - 3);
    }
    const { step: yStep, ticks } = niceTicks(range[0], range[1], Math.max(2, Math.floor(h / 40)));
    this.yTicks = ticks.map((v) => tickLabel(v, yStep));  // read by the browser tests
    for (const v of ticks) {
      const py = Math.round(y(v)) + 0.5;
      ctx.moveTo(0, py); ctx.lineTo(w, py);
      ctx.fillText(tickLabel(v, yStep), 2, Math.min(h - 14, Math.max(10, py - 2)));
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
        item.clock.title = note && "the source's clock is off: plotted on the time it arrived";
      }
      const stale = !d || now - d.latestMs > STALE_MS;
      if (item.stale !== stale) item.el.classList.toggle("stale", (item.stale = stale));
    }
  }
}

/** "clock 3.0 h behind" for a channel the server plots on receive time, else "". */
export function clockNote(channel) {
  if (!channel || !channel.clock_shifted) return "";
  const seconds = Math.abs(channel.clock_offset_ms) / 1000;
  const size = seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h`
    : seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(1)} s`;
  return `clock ${size} ${channel.clock_offset_ms < 0 ? "behind" : "ahead"}`;
}

customElements.define("sd-chart", SdChart);
