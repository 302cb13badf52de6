// What the spectrum and XY panels share: the menu a click on a chart's legend opens
// ("spectrum", "XY against ..."), the range a panel reads (the chart's window, or a
// tag), the panel's frame (head, canvas, status line) and axis helpers (round labels
// on linear and log scales). The panels themselves are spectrum.js and xy.js.

import { app } from "./app.js";
import { niceTicks, tickLabel } from "./chartmath.js";

export const TRACE = "#1f77b4";
export const GRID = "rgba(128,128,128,0.25)";
export const PAD = { left: 64, right: 12, top: 18, bottom: 36 };  // CSS px around the plot

/** The range a panel reads: the chart's paused view, or the window ending now (ms on
 * the chart's axis, as /api/range takes them). */
export function chartRange(chart) {
  if (chart.view) return chart.view;
  const end = app.conn.now();
  return [end - chart.windowSeconds * 1000, end];
}

/** Query parameters for a range choice: "chart" or "tag:NAME". */
export function rangeParams(choice, chart) {
  if (choice && choice.startsWith("tag:")) return { tag: choice.slice(4) };
  const [t0, t1] = chartRange(chart);
  return { start: String(Math.round(t0)), end: String(Math.round(t1)) };
}

export const REFRESH_MS = 2000;  // how often a panel on a live chart reads its window again

/** ``panel.read()``, one at a time (``quiet``: no "loading" shown): a load asked for
 * while one runs (a control changed) runs once after it, with the controls as they are
 * then. */
export async function loadPanel(panel, quiet = false) {
  if (panel.busy) { panel.again = true; return; }
  panel.busy = true;
  if (!quiet) {  // a quiet read, the live refresh, says nothing until it has the answer
    panel.dataset.state = "loading";
    panel.status.textContent = "reading every sample of the range…";
  }
  try {
    await panel.read();
  } finally {
    panel.busy = false;
    panel.loads = (panel.loads || 0) + 1;  // read by the browser tests
  }
  if (panel.again) { panel.again = false; loadPanel(panel); }
}

/** Read ``panel``'s range again every REFRESH_MS while its chart is live (not paused)
 * and the range is the chart's window; never while a read is under way, so a slow
 * server gets one request at a time and the next only after it answered. */
export function refreshWhileLive(panel) {
  const timer = setInterval(() => {
    if (!panel.isConnected) { clearInterval(timer); return; }
    const chart = panel.chart;
    if (panel.busy || document.hidden || !chart || chart.paused || !chart.isConnected ||
        panel.range.value !== "chart") return;
    loadPanel(panel, true);
  }, REFRESH_MS);
}

/** A select of "the chart's window" and every tag (filled when the tags answer). */
export function rangeSelect() {
  const select = document.createElement("select");
  select.title = "the range the panel reads every sample of";
  select.add(new Option("chart window", "chart"));
  fetch("api/tags").then((r) => (r.ok ? r.json() : [])).then((tags) => {
    for (const t of tags) select.add(new Option(`tag ${t.name}`, `tag:${t.name}`));
  }).catch(() => {});
  return select;
}

/** The panel's frame inside ``el``: head (title, controls, refresh, close), a canvas,
 * a status line. Returns its parts. */
export function frame(el, title, controls) {
  el.classList.add("sd-panel");
  const head = document.createElement("div");
  head.className = "panel-head";
  const name = Object.assign(document.createElement("span"), { className: "panel-title", textContent: title });
  const refresh = Object.assign(document.createElement("button"), { textContent: "refresh", title: "read the range again" });
  const close = Object.assign(document.createElement("button"), { textContent: "×", title: "close this panel" });
  close.setAttribute("aria-label", "close this panel");
  close.onclick = () => el.remove();
  head.append(name, ...controls, refresh, close);
  const canvas = document.createElement("canvas");
  canvas.className = "panel-canvas";
  canvas.setAttribute("role", "img");
  const status = Object.assign(document.createElement("div"), { className: "panel-status" });
  el.replaceChildren(head, canvas, status);
  return { refresh, canvas, status };
}

/** The canvas sized to its box for the device's pixels; the context in CSS px. */
export function context(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = getComputedStyle(canvas).color;
  return { ctx, w, h };
}

/** A linear axis: value to px over [lo, hi] -> [p0, p1], and round ticks. */
export function linear(lo, hi, p0, p1, most) {
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const { step, ticks } = niceTicks(lo, hi, most);
  return { lo, hi, map: (v) => p0 + ((v - lo) / (hi - lo)) * (p1 - p0),
           ticks: ticks.map((v) => ({ v, label: tickLabel(v, step) })) };
}

/** A log axis over [lo, hi] (> 0): decades labelled 1, 10, 100 (or 1e-6...), and 2 and 5
 * between them when few decades show. */
export function logarithmic(lo, hi, p0, p1) {
  const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
  const l0 = Math.log10(lo), l1 = Math.max(Math.log10(hi), l0 + 1e-9);
  const ticks = [];
  const sub = b - a <= 4 ? [1, 2, 5] : [1];
  for (let d = a; d <= b; d++) {
    for (const m of sub) {
      const v = m * 10 ** d;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push({ v, label: logLabel(v) });
    }
  }
  return { lo, hi, map: (v) => p0 + ((Math.log10(v) - l0) / (l1 - l0)) * (p1 - p0), ticks };
}

function logLabel(v) {
  return v >= 0.01 && v < 1e5 ? String(Number(v.toPrecision(1))) : v.toExponential(0).replace("+", "");
}

/** Grid lines and labels of both axes, and the axes' names. */
export function drawAxes(ctx, w, h, x, y, xName, yName) {
  ctx.save();
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  let free = -Infinity;
  for (const t of x.ticks) {
    const px = Math.round(x.map(t.v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(px, PAD.top); ctx.lineTo(px, h - PAD.bottom); ctx.stroke();
    const half = ctx.measureText(t.label).width / 2;
    if (px - half > free) { ctx.fillText(t.label, px, h - PAD.bottom + 3); free = px + half + 6; }
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of y.ticks) {
    const py = Math.round(y.map(t.v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(PAD.left, py); ctx.lineTo(w - PAD.right, py); ctx.stroke();
    ctx.fillText(t.label, PAD.left - 4, py);
  }
  ctx.textAlign = "right";  // a line below the tick labels: never on one
  ctx.textBaseline = "bottom";
  ctx.fillText(xName, w - PAD.right, h - 1);
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText(yName, 2, 0);
  ctx.restore();
}

/** An answer's JSON, or an Error carrying the server's reason. */
export async function getJson(path, params) {
  const answer = await fetch(`${path}?${new URLSearchParams(params)}`, { signal: AbortSignal.timeout(60000) });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const detail = typeof body.detail === "string" ? body.detail
      : Array.isArray(body.detail) ? body.detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ")
      : answer.statusText;
    throw new Error(`${answer.status}: ${detail}`);
  }
  return body;
}

// -- the legend's menu ------------------------------------------------------------------
// A legend's name is a button (chart.js makes it focusable): a click, Enter or Space
// opens the menu; arrow keys, Home and End move in it, Escape closes it and gives the
// focus back to the name, Tab leaves it (closed).
let menu = null;

function closeMenu(refocus = false) {
  if (!menu) return;
  const opener = menu.opener;
  menu.remove();
  menu = null;
  if (opener) opener.setAttribute("aria-expanded", "false");
  if (refocus && opener && opener.isConnected) opener.focus();
}

/** Open a panel after ``chart``: its element name and attributes. */
function openPanel(chart, tag, attrs) {
  const panel = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) panel.setAttribute(k, v);
  panel.chart = chart;
  let after = chart;  // after the chart's other panels, so they read in the order made
  while (after.nextElementSibling && after.nextElementSibling.classList.contains("sd-panel")) {
    after = after.nextElementSibling;
  }
  after.after(panel);
  return panel;
}

function showMenu(chart, signal, opener, at) {
  closeMenu();
  menu = document.createElement("div");
  menu.className = "panel-menu";
  menu.setAttribute("role", "menu");
  menu.setAttribute("aria-label", `panels of ${signal}`);
  menu.opener = opener;
  const entry = (text, run) => {
    const b = Object.assign(document.createElement("button"), { textContent: text });
    b.setAttribute("role", "menuitem");
    b.tabIndex = -1;  // one tab stop: the arrows move inside
    b.onclick = () => { closeMenu(); run(); };
    menu.append(b);
  };
  entry(`spectrum of ${signal}`, () => openPanel(chart, "sd-spectrum", { signal }));
  for (const other of chart.signals.filter((s) => s !== signal)) {
    entry(`XY: ${other} against ${signal}`, () => openPanel(chart, "sd-xy", { x: signal, y: other }));
  }
  menu.addEventListener("keydown", menuKeys);
  menu.addEventListener("focusout", (e) => {  // Tab (or a click) away closes it
    if (menu && e.relatedTarget && !menu.contains(e.relatedTarget)) closeMenu();
  });
  document.body.append(menu);
  menu.style.left = `${Math.min(at.x, innerWidth - menu.offsetWidth - 4) + scrollX}px`;
  menu.style.top = `${at.y + 4 + scrollY}px`;
  opener.setAttribute("aria-expanded", "true");
  menu.querySelector("button").focus();
}

function menuKeys(e) {
  const items = [...menu.querySelectorAll("button")];
  const at = items.indexOf(document.activeElement);
  const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[e.key];
  if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); closeMenu(true); return; }
  if (to === undefined) return;
  e.preventDefault();
  items[(to + items.length) % items.length].focus();
}

/** The legend name ``target`` is in, with its chart and signal, or null. */
function legendName(target) {
  const name = target.closest && target.closest("sd-chart .legend-item b");
  const chart = name && name.closest("sd-chart");
  return chart ? { chart, name } : null;
}

document.addEventListener("click", (e) => {
  const hit = legendName(e.target);
  if (!hit) { if (menu && !menu.contains(e.target)) closeMenu(); return; }
  e.stopPropagation();
  // a click the keyboard made (Enter on a button) has no position: below the name
  const r = hit.name.getBoundingClientRect();
  const at = e.detail ? { x: e.clientX, y: e.clientY } : { x: r.left, y: r.bottom };
  showMenu(hit.chart, hit.name.textContent, hit.name, at);
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") { closeMenu(true); return; }
  const hit = (e.key === "Enter" || e.key === " ") && legendName(e.target);
  if (!hit || e.altKey || e.ctrlKey || e.metaKey) return;
  e.preventDefault();  // Space would scroll the page (or pause every chart)
  const r = hit.name.getBoundingClientRect();
  showMenu(hit.chart, hit.name.textContent, hit.name, { x: r.left, y: r.bottom });
});

/** Open a panel from code (tests, a layout): ``kind`` "spectrum" or "xy". */
export function open(chart, kind, attrs) {
  return openPanel(chart, kind === "xy" ? "sd-xy" : "sd-spectrum", attrs);
}
