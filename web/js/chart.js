// <sd-chart signals="motor.speed motor.torque" window="60" [min=".." max=".."] [view="t0 t1"]>
// A canvas stripchart. Per pixel column it draws the min..max envelope of the buckets
// that fall in it, so a frame costs the same whatever the data rate, and a one-sample
// spike stays visible. Live charts scroll with the server clock; a paused chart can be
// panned (drag, arrow keys) and zoomed (wheel, + and -) over the history; ``view`` (ms
// since the epoch) opens it paused on that range.
//
// Where a sample is drawn: a paused chart whose columns are finer than the server's
// memory there (10 ms and 250 ms buckets) asks the cache for its window (GET /api/range:
// the samples themselves, or summaries no wider than a column), so a spike lands in its
// own column at any zoom; the memory fills in only where the cache has nothing.

import { app } from "./app.js";
import { backdropRows, cardColor, drawGutter, GUTTER_MIN, LABEL_FONT, putTimeLabels, timeLines
} from "./axes.js";
import { autoRange, fmt, foldColumns, newColumns, scanColumns } from "./chartmath.js";
import { showEmpty, updateLegend } from "./legend.js";
import { LiveTraces } from "./livetraces.js";
import { tagRange } from "./mark.js";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
export const WINDOWS = [[10, "10 s"], [60, "1 min"], [600, "10 min"]];
const CONTEXT = { alpha: false };  // the plot's canvas: see axes.js

const TIME_STRIP = 16;  // CSS px below the plot for the time labels
const LEAST_SPAN_MS = 10;  // the deepest zoom: ten 1 kHz samples
const MOST_SPAN_MS = 7 * 86400e3;  // the widest: a week (the cache holds the past)
const KEY_PAN = 0.1;  // of the window, per arrow key (shift: half a window)
const KEY_ZOOM = 1.25;

export class SdChart extends HTMLElement {
  connectedCallback() {
    if (this.built) { app.layoutChanged(); return; }
    this.built = true;
    this.paused = false;
    this.cursorX = null;
    /** @type {Map<string, any>} the cache's answers, per signal */
    this.past = new Map();
    this.pastKey = "";
    this.pastBusy = false;
    this.innerHTML = `
      <div class="chart-head">
        <span class="chart-title"></span>
        <select class="chart-window" title="time window" aria-label="time window"></select>
        <button class="chart-scale" title="autoscale or fixed range">auto</button>
        <button class="chart-pause" aria-pressed="false"
          title="pause: then drag or arrow keys to pan, wheel or + and - to zoom, shift-drag to tag a range">pause</button>
        <button class="chart-remove" title="remove this chart" aria-label="remove this chart">×</button>
      </div>
      <div class="chart-body">
        <canvas class="chart-gutter" aria-hidden="true"></canvas>
        <div class="chart-plot">
          <canvas class="chart-canvas" tabindex="0" role="img"
            aria-keyshortcuts="ArrowLeft ArrowRight + - Escape"></canvas>
          <div class="chart-cursor"></div><div class="chart-select" hidden></div>
          <div class="chart-empty" hidden></div>
        </div>
      </div>
      <div class="chart-legend"></div>`;
    this.canvas = this.querySelector(".chart-canvas");
    this.gutter = this.querySelector(".chart-gutter");
    // the canvases' sizes (CSS px), kept by a ResizeObserver: reading clientWidth in a
    // frame forces a layout whenever a legend or label changed the page before it, once
    // per chart
    this.boxes = new Map();
    const sizes = new ResizeObserver((entries) => {
      for (const e of entries) this.boxes.set(e.target, [e.contentRect.width, e.contentRect.height]);
    });
    sizes.observe(this.canvas);
    sizes.observe(this.gutter);
    this.gutterWidth = GUTTER_MIN;
    this.gutter.style.width = `${GUTTER_MIN}px`;
    this.querySelector(".chart-body").style.setProperty("--gutter", `${GUTTER_MIN}px`);
    this.empty = this.querySelector(".chart-empty");
    this.legend = this.querySelector(".chart-legend");
    const select = this.querySelector(".chart-window");
    for (const [seconds, label] of WINDOWS) select.add(new Option(label, String(seconds)));
    select.value = String(this.windowSeconds);
    if (select.value !== String(this.windowSeconds)) {
      select.add(new Option(`${this.windowSeconds} s`, String(this.windowSeconds)));
      select.value = String(this.windowSeconds);
    }
    select.onchange = () => {
      this.setAttribute("window", select.value);
      if (this.paused) this.setPaused(true);  // the new window, ending where the old did
      app.layoutChanged();
    };
    this.querySelector(".chart-pause").onclick = () => this.setPaused(!this.paused);
    this.querySelector(".chart-scale").onclick = () => this.toggleScale();
    this.querySelector(".chart-remove").onclick = () => { this.remove(); app.layoutChanged(); };
    this.bindPointer();
    this.bindKeys();
    this.buildLegend();
    this.updateScaleButton();
    const view = (this.getAttribute("view") || "").split(/[\s,]+/).map(Number);
    if (view.length === 2 && view.every(Number.isFinite) && view[1] > view[0]) {
      this.setPaused(true, view);
    }
    app.register(this);
  }

  disconnectedCallback() {
    app.unregister(this);
    for (const d of app.conn.data.values()) d.dirty.delete(this.traces);  // no more readers
  }

  static get observedAttributes() { return ["signals", "window", "min", "max", "title"]; }
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

  /** Pause on ``span`` ([t0, t1] ms; by default the window ending now, or where the
   * paused view ends), or resume. */
  setPaused(paused, span) {
    this.paused = paused;
    this.classList.toggle("paused", paused);
    const button = this.querySelector(".chart-pause");
    button.textContent = paused ? "resume" : "pause";
    button.setAttribute("aria-pressed", String(paused));
    if (paused) {
      const end = span ? span[1] : this.span ? this.span[1] : app.conn.now();
      this.span = span ? [...span] : [end - this.windowSeconds * 1000, end];
    } else {
      this.span = null;
    }
    this.labelledAt = 0;  // say the new state now
  }

  /** The view [t0, t1] (ms): what a shared link carries for a paused chart. */
  get view() { return this.paused && this.span ? [...this.span] : null; }

  buildLegend() {
    this.legend.innerHTML = "";
    this.items = this.signals.map((id, i) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.style.setProperty("--color", COLORS[i % COLORS.length]);
      // not an <output>: that is a live region, read out ten times a second
      item.innerHTML = `<i></i><b></b> <span class="legend-value">–</span> <small></small> <em class="clock"></em>`;
      const name = item.querySelector("b");
      name.textContent = id;
      // a button to the keyboard too: it opens the spectrum and XY menu (panels.js)
      name.tabIndex = 0;
      name.setAttribute("role", "button");
      name.setAttribute("aria-haspopup", "menu");
      name.setAttribute("aria-expanded", "false");
      this.legend.append(item);
      const hex = COLORS[i % COLORS.length];
      const rgba = (0xff << 24 | parseInt(hex.slice(5, 7), 16) << 16 |
                    parseInt(hex.slice(3, 5), 16) << 8 | parseInt(hex.slice(1, 3), 16)) >>> 0;
      return { id, el: item, color: hex, rgba, out: item.querySelector(".legend-value"),
               unit: item.querySelector("small"), clock: item.querySelector(".clock") };
    });
    this.querySelector(".chart-title").textContent = this.getAttribute("title") || "";
    this.cols = null;
    this.traces = this.traces || new LiveTraces();  // one per chart: the signals' key
    this.traces.invalidate();
    this.frameCols = [];
    this.labelledAt = 0;
    if (this.pastFor !== this.signals.join(" ")) {  // other signals: other answers
      this.pastFor = this.signals.join(" ");
      this.past = new Map();
      this.pastKey = "";
    }
  }

  /** Zoom the paused view by ``k`` (above 1: out) about time ``at``. */
  zoom(k, at) {
    const [t0, t1] = this.span;
    k = Math.min(Math.max(k, LEAST_SPAN_MS / (t1 - t0)), MOST_SPAN_MS / (t1 - t0));
    this.span = [at - (at - t0) * k, at + (t1 - at) * k];
  }

  pan(fraction) {
    const [t0, t1] = this.span, shift = (t1 - t0) * fraction;
    this.span = [t0 + shift, t1 + shift];
  }

  bindPointer() {
    const body = this.querySelector(".chart-plot");
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
    // The wheel zooms a paused chart, or any chart with Ctrl or Cmd held (a trackpad's
    // pinch too); otherwise it scrolls the page, as over any other part of it.
    body.addEventListener("wheel", (e) => {
      if (!this.paused && !e.ctrlKey && !e.metaKey) return;
      e.preventDefault();
      if (!this.paused) this.setPaused(true);
      const rect = this.canvas.getBoundingClientRect();
      const [t0, t1] = this.span;
      this.zoom(Math.exp(e.deltaY * 0.002),
                t0 + ((e.clientX - rect.left) / rect.width) * (t1 - t0));
    }, { passive: false });
  }

  /** Keys on the focused plot: arrows pan (a tenth of the window, shift: half), + and -
   * (or up and down) zoom about the middle, Escape resumes. The first one pauses. */
  bindKeys() {
    this.canvas.addEventListener("keydown", (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.key === "Escape" && this.paused) { e.preventDefault(); this.setPaused(false); return; }
      const step = e.shiftKey ? 0.5 : KEY_PAN;
      const move = { ArrowLeft: -step, ArrowRight: step }[e.key];
      const zoom = { "+": 1 / KEY_ZOOM, "=": 1 / KEY_ZOOM, ArrowUp: 1 / KEY_ZOOM,
                     "-": KEY_ZOOM, ArrowDown: KEY_ZOOM }[e.key];
      if (move === undefined && zoom === undefined) return;
      e.preventDefault();
      if (!this.paused) this.setPaused(true);
      if (move !== undefined) this.pan(move);
      else this.zoom(zoom, (this.span[0] + this.span[1]) / 2);
      this.labelledAt = 0;
    });
  }

  /** An element's size in CSS px as the ResizeObserver last saw it (read from the
   * layout only until it has). */
  box(el) {
    return this.boxes.get(el) || [el.clientWidth, el.clientHeight];
  }

  /** Draw one frame: signals as pixels over the bands and grid (axes.js), the time
   * labels below them, the value labels in the gutter left of the plot. With ``later``, the text outside the canvases
   * (legend, cursor, "no data") waits for ``drawText``: the page draws every canvas
   * first and changes the document after, so no canvas call finds its style dirty. */
  draw(now, later = false) {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const [w, h] = this.box(canvas);
    if (!w || !h) return;
    const W = Math.round(w * dpr), H = Math.round(h * dpr);
    if (canvas.width !== W || canvas.height !== H || !this.image) {
      canvas.width = W;
      canvas.height = H;
      // opaque: the compositor copies it rather than blending it over the page (the
      // card's colour is in its pixels); its first getContext decides
      this.ctx = canvas.getContext("2d", CONTEXT);
      this.card = cardColor(this);
      // set once (a resize resets it): setting a font, like reading the canvas's own
      // direction, may make the page compute its style
      this.ctx.font = LABEL_FONT;
      this.ctx.direction = "ltr";
      this.image = this.ctx.createImageData(W, H);
      this.pixels = new Uint32Array(this.image.data.buffer);
      this.cols = null;
    }
    // a live window starts on a whole column of a grid fixed in time, so the next frame
    // is this one moved left by whole columns: only its newest columns are drawn again
    const live = !(this.paused && this.span);
    const spanMs = this.windowSeconds * 1000, k = W / spanMs;
    const c = Math.ceil((now - spanMs) * k), grid = live ? { k, origin: c } : null;
    const [t0, t1] = live ? [c / k, c / k + spanMs] : this.span;
    this.msPerPx = (t1 - t0) / w;  // a CSS pixel: what the eye can tell apart
    if (this.paused) this.fetchPast(t0, t1, W);
    const datas = this.items.map((item) => app.conn.data.get(item.id));
    // the plot: all but a strip at the bottom that holds the time labels, so no label
    // ever covers a sample; the value labels are in the gutter, left of it
    const ph = h - TIME_STRIP, PH = H - Math.round(TIME_STRIP * dpr);
    this.plotHeight = PH;  // device pixels (read by the browser tests)
    const key = `${W}|${PH}|${spanMs}|${this.items.length}`;
    const times = timeLines(this, W, w, dpr, t0, t1);
    let parts = null;  // the columns to plot again; null: all of them
    if (live && this.cols && this.cols.length === this.items.length) {
      parts = this.traces.advance(datas, this.cols, grid, t0, t1, W, key, times.columns);
    } else {
      this.traces.invalidate();
    }
    const columns = parts ? this.cols : datas.map((d, i) => (d || this.paused
      ? this.columns(d, t0, t1, W, i, grid) : null));
    let lo = Infinity, hi = -Infinity;
    for (const col of columns) {
      if (!col) continue;
      scanColumns(col);
      if (col.hi >= col.lo) { lo = Math.min(lo, col.lo); hi = Math.max(hi, col.hi); }
    }
    this.frameCols = columns;
    const any = hi >= lo;
    const range = this.fixedRange || (any ? (this.autoRange = autoRange(this.autoRange, lo, hi))
      : null);
    this.lastRange = range;
    const y = range ? (v) => ph - ((v - range[0]) / (range[1] - range[0])) * ph : null;
    const { rows, lines, ticks } = backdropRows(this, H, PH, dpr, range, y, this.card);
    const back = { rows, lines, columns: times.columns };
    if (parts && this.traces.changed(range, columns, rows)) parts = null;
    this.traces.plot(this.pixels, W, PH, columns, this.items, range, parts, back);
    this.drawnFull = !parts;  // read by the browser tests
    if (live) this.traces.drawn(datas, columns, c, key, range, !parts, back);
    putTimeLabels(this, this.pixels, W, PH, H, times.labels, dpr, this.card);
    this.ctx.putImageData(this.image, 0, 0);  // the frame's only canvas call
    drawGutter(this, ticks, ph, dpr);
    this.textArgs = [any, now, t0, t1, w, W];
    if (!later) this.drawText();
  }

  /** The document's part of the frame ``draw`` drew last: legend values, cursor, the
   * empty notice. */
  drawText() {
    if (!this.textArgs) return;
    const [any, now, t0, t1, w, W] = this.textArgs;
    this.textArgs = null;
    showEmpty(this, any);
    updateLegend(this, now, t0, t1, w, W);
  }

  /** Which source each part of the window is drawn from: see foldColumns. */
  columns(d, t0, t1, cols, slot, grid) {
    if (!this.cols || this.cols.length !== this.items.length || this.cols[0].count.length !== cols) {
      this.cols = this.items.map(() => newColumns(cols));
    }
    const levels = d ? d.levels.map((s, i) => ({ n: s.n, a: s.a, width: d.widths[i] })) : [];
    let past = null, maxWidth = Infinity;
    if (this.paused && this.needsCache(d, t0, t1, this.items[slot].id)) {
      const stored = this.past.get(this.items[slot].id);
      if (!stored) maxWidth = 2 * this.msPerPx;  // not answered yet: no bucket over 2 px
      else if (!stored.failed) {
        past = { width: (stored.t1 - stored.t0) / stored.cols, ...stored.rows };
        maxWidth = this.msPerPx;
      }
    }
    return foldColumns(levels, past, t0, t1, this.cols[slot], maxWidth, grid);
  }

  /** Whether part of [t0, t1] would be drawn from a memory level coarser than a pixel
   * (or from none: before the memory begins). */
  needsCache(d, t0, t1, id) {
    if (!d) return true;
    // a replay is drawn at its replayed times, which the cache knows nothing of
    if (app.conn.describe(id)?.channel?.replay) return false;
    let until = Infinity;
    for (let level = 0; level < d.levels.length && until > t0; level++) {
      const s = d.levels[level];
      if (!s.n) continue;
      if (d.widths[level] > this.msPerPx && s.a.start[0] <= t1) return true;
      until = Math.min(until, s.first);
    }
    return until > t0;
  }

  /** A paused chart asks the server for what the cache has of its window (min, max and
   * last per column) for the signals that need it, once per view and one view at a time;
   * the previous answers stay drawn until the new ones arrive. */
  fetchPast(t0, t1, cols) {
    const key = `${Math.round(t0)}|${Math.round(t1)}|${cols}`;
    if (this.pastKey === key || this.pastBusy) return;
    const wanted = this.items.filter((item) => this.needsCache(app.conn.data.get(item.id),
                                                               t0, t1, item.id));
    this.pastKey = key;
    if (!wanted.length) return;
    this.pastBusy = true;
    const items = this.items;
    Promise.all(wanted.map(async (item) => {
      const q = new URLSearchParams({ signal: item.id, start_ms: t0, end_ms: t1, columns: cols });
      try {
        // a server that never answers must not hold the next views back for good
        const answer = await fetch(`api/range?${q}`, { signal: AbortSignal.timeout(30000) });
        if (!answer.ok) throw new Error(`${item.id}: ${(await answer.json()).detail}`);
        const body = await answer.json();
        if (items !== this.items) return;  // the signals changed meanwhile
        this.past.set(item.id, { key, t0, t1, cols, level: body.level, rows: {
          start: body.start_ms, low: body.min, high: body.max, last: body.last } });
      } catch (err) {
        // drawn from the memory alone, as well as it can; said in the connection pill
        if (items === this.items) this.past.set(item.id, { key, failed: true });
        app.conn.lastError = `scroll-back: ${err.message}`;
        app.conn.dispatchEvent(new CustomEvent("servererror", { detail: { message: err.message } }));
      }
    })).finally(() => { this.pastBusy = false; });
  }

  /** Whether every signal that needs the cache for the current view has its answer
   * (the browser tests wait for this). */
  settled() {
    if (this.pastBusy) return false;
    if (!this.paused) return true;
    const [t0, t1] = this.span;
    if (this.pastKey !== `${Math.round(t0)}|${Math.round(t1)}|${this.canvas.width}`) return false;
    return this.items.every((item) => {
      if (!this.needsCache(app.conn.data.get(item.id), t0, t1, item.id)) return true;
      const stored = this.past.get(item.id);
      return Boolean(stored && stored.key === this.pastKey);
    });
  }
}

// another colour scheme, another card colour: read again, everything drawn again
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const el of app.elements) if (el instanceof SdChart) el.image = null;
});

customElements.define("sd-chart", SdChart);
