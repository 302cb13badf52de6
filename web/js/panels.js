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
let menu = null;

function closeMenu() { if (menu) { menu.remove(); menu = null; } }

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

function showMenu(chart, signal, at) {
  closeMenu();
  menu = document.createElement("div");
  menu.className = "panel-menu";
  menu.setAttribute("role", "menu");
  const entry = (text, run) => {
    const b = Object.assign(document.createElement("button"), { textContent: text });
    b.setAttribute("role", "menuitem");
    b.onclick = () => { closeMenu(); run(); };
    menu.append(b);
  };
  entry(`spectrum of ${signal}`, () => openPanel(chart, "sd-spectrum", { signal }));
  for (const other of chart.signals.filter((s) => s !== signal)) {
    entry(`XY: ${other} against ${signal}`, () => openPanel(chart, "sd-xy", { x: signal, y: other }));
  }
  document.body.append(menu);
  menu.style.left = `${Math.min(at.clientX, innerWidth - menu.offsetWidth - 4) + scrollX}px`;
  menu.style.top = `${at.clientY + 4 + scrollY}px`;
  menu.querySelector("button").focus();
}

document.addEventListener("click", (e) => {
  const item = e.target.closest && e.target.closest("sd-chart .legend-item");
  if (!item) { if (menu && !menu.contains(e.target)) closeMenu(); return; }
  const chart = item.closest("sd-chart");
  const name = item.querySelector("b");
  if (!name || !chart) return;
  e.stopPropagation();
  showMenu(chart, name.textContent, e);
});
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenu(); });

/** Open a panel from code (tests, a layout): ``kind`` "spectrum" or "xy". */
export function open(chart, kind, attrs) {
  return openPanel(chart, kind === "xy" ? "sd-xy" : "sd-spectrum", attrs);
}
