// The page: one connection, the elements on it, one redraw per animation frame,
// the layout kept in the URL (so it can be shared), the signal picker, the mark control,
// and statistics (window.sd) for the tests and the benchmark.

import { Connection } from "./connection.js";

const RING = 2000;

function push(ring, value) {
  ring.push(value);
  if (ring.length > RING) ring.splice(0, ring.length - RING);
}

class App {
  constructor() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.conn = new Connection(`${proto}//${location.host}/ws`);
    /** @type {Set<any>} */
    this.elements = new Set();
    this.pendingLayout = false;
    this.stats = { frames: 0, frameMs: [], intervalMs: [], latencyMs: [], lastDrawn: new Map() };
    this.lastFrame = 0;
    requestAnimationFrame((t) => this.frame(t));
  }

  register(el) { this.elements.add(el); this.layoutChanged(); }
  unregister(el) { this.elements.delete(el); this.layoutChanged(); }

  /** Coalesce layout changes: resubscribe and update the URL once per task. */
  layoutChanged() {
    if (this.pendingLayout) return;
    this.pendingLayout = true;
    queueMicrotask(() => {
      this.pendingLayout = false;
      const signals = [], windows = [60];
      for (const el of this.elements) {
        signals.push(...el.signals);
        if (el.windowSeconds) windows.push(el.windowSeconds);
      }
      this.conn.subscribe(signals, Math.max(...windows));
      saveLayout();
    });
  }

  frame(t) {
    requestAnimationFrame((next) => this.frame(next));
    const start = performance.now();
    const now = this.conn.now();
    // the canvases first, then the document (the legends, the value cards): a canvas
    // call after a document change recomputes the page's style, once per chart
    for (const el of this.elements) if (el.drawText) el.draw(now, true);
    for (const el of this.elements) if (el.drawText) el.drawText(); else el.draw(now);
    const stats = this.stats;
    const drawn = Date.now();
    for (const el of this.elements) {
      for (const id of el.signals) {
        const d = this.conn.data.get(id);
        if (!d || !d.latestMs) continue;
        const before = stats.lastDrawn.get(id);
        if (before !== undefined && d.latestMs > before) push(stats.latencyMs, drawn - d.latestMs);
        stats.lastDrawn.set(id, d.latestMs);
      }
    }
    stats.frames++;
    push(stats.frameMs, performance.now() - start);
    if (this.lastFrame) push(stats.intervalMs, t - this.lastFrame);
    this.lastFrame = t;
  }
}

export const app = new App();
window.sd = app;

// -- layout in the URL ------------------------------------------------------------------
const layoutRoot = () => document.getElementById("layout");

/** The layout as the URL keeps it; with ``views``, the range of each paused chart too
 * (what a shared link carries: it opens paused on the same range). */
function describeLayout({ views = false } = {}) {
  return [...layoutRoot().children].map((el) => {
    if (el.localName === "sd-chart") {
      const item = { chart: el.signals.join(" "), window: el.windowSeconds };
      if (el.fixedRange) [item.min, item.max] = el.fixedRange;
      if (el.getAttribute("title")) item.title = el.getAttribute("title");
      if (views && el.view) item.view = el.view.map((t) => Math.round(t));
      return item;
    }
    if (el.localName === "sd-value") return { value: el.signal };
    return null;
  }).filter(Boolean);
}

function saveLayout() {
  const encoded = encodeURIComponent(JSON.stringify(describeLayout()));
  history.replaceState(null, "", `#layout=${encoded}`);
}

/** A link to this page with its layout (and with ``views``, the paused charts' ranges). */
export function layoutLink({ views = false } = {}) {
  const encoded = encodeURIComponent(JSON.stringify(describeLayout({ views })));
  return `${location.origin}${location.pathname}${location.search}#layout=${encoded}`;
}

export function buildElement(item) {
  if (item.value) {
    const v = document.createElement("sd-value");
    v.setAttribute("signal", item.value);
    return v;
  }
  const c = document.createElement("sd-chart");
  c.setAttribute("signals", item.chart);
  c.setAttribute("window", String(item.window || 60));
  if (item.min !== undefined) { c.setAttribute("min", item.min); c.setAttribute("max", item.max); }
  if (item.title) c.setAttribute("title", item.title);
  if (Array.isArray(item.view)) c.setAttribute("view", item.view.join(" "));
  return c;
}

export function loadLayoutFromUrl() {
  const match = location.hash.match(/layout=([^&]*)/);
  if (!match) return;
  try {
    const items = JSON.parse(decodeURIComponent(match[1]));
    layoutRoot().replaceChildren(...items.map(buildElement));
  } catch (err) {
    console.warn("speeddata: ignoring a layout in the URL that does not parse", err);
  }
}
