// A chart's axes: the time grid and its labels in the strip below the plot, the value
// grid, the limit bands, and the value labels in the gutter left of the plot. Drawn
// beneath the traces (chart.js composites them "destination-over").

import { app } from "./app.js";
import { niceTicks, tickLabel, timeLabel, timeTicks } from "./chartmath.js";

export const GUTTER_MIN = 32;  // CSS px left of the plot for the value labels, at least
const BANDS = { warn: "rgba(245, 197, 24, 0.16)", alarm: "rgba(214, 39, 40, 0.14)" };
export const LABEL_FONT = "11px system-ui, sans-serif";
const LABEL_COLOR = "rgba(128,128,128,0.95)";
const GRID_COLOR = "rgba(128,128,128,0.25)";

/** Bands beyond each signal's limits: amber past warn, red past alarm. */
export function drawLimits(chart, ctx, w, h, y) {
  const clampY = (v) => Math.min(h, Math.max(0, y(v)));
  for (const item of chart.items) {
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

/** A label's width in CSS px (LABEL_FONT), remembered: the same few labels are
 * measured every frame. */
export function textWidth(chart, ctx, text) {
  if (!chart.widths || chart.widths.size > 500) chart.widths = new Map();
  let width = chart.widths.get(text);
  if (width === undefined) { width = ctx.measureText(text).width; chart.widths.set(text, width); }
  return width;
}

/** Time lines and their labels in the strip below the plot; a label that would run
 * into the one before it is left out, and a line whose label the right edge would cut
 * is not drawn (alone, it reads as a stray line). */
export function drawTimeGrid(chart, ctx, w, h, ph, t0, t1) {
  ctx.strokeStyle = GRID_COLOR;
  ctx.fillStyle = LABEL_COLOR;
  ctx.lineWidth = 1;  // the font is the chart's, set with its context
  const { step, ticks } = timeTicks(t0, t1);
  const labels = [];
  let free = 0;  // where the next label may start
  ctx.beginPath();
  ctx.moveTo(0, ph + 0.5); ctx.lineTo(w, ph + 0.5);
  for (const t of ticks) {
    const x = Math.round(((t - t0) / (t1 - t0)) * w) + 0.5;
    const text = timeLabel(t, step, t1 - t0);
    const width = textWidth(chart, ctx, text);
    if (x + 2 + width > w) continue;
    ctx.moveTo(x, 0); ctx.lineTo(x, ph + 4);
    if (x + 2 >= free) {
      ctx.fillText(text, x + 2, h - 3);
      labels.push(text);
      free = x + 2 + width + 8;
    }
  }
  ctx.stroke();
  chart.xTicks = labels;  // read by the browser tests
}

/** Value lines across the plot; returns the ticks for the gutter. */
export function drawValueGrid(chart, ctx, w, ph, range, y) {
  const { step, ticks } = niceTicks(range[0], range[1], Math.max(2, Math.floor(ph / 40)));
  ctx.strokeStyle = GRID_COLOR;
  ctx.beginPath();
  for (const v of ticks) {
    const py = Math.round(y(v)) + 0.5;
    ctx.moveTo(0, py); ctx.lineTo(w, py);
  }
  ctx.stroke();
  return ticks.map((v) => ({ text: tickLabel(v, step), py: y(v) }));
}

/** The value labels, right-aligned in the gutter at their lines' heights. The gutter
 * widens to the longest label (in 8 px steps, so it does not jitter). */
export function drawGutter(chart, ticks, ph, dpr) {
  const g = chart.gutter;
  chart.yTicks = ticks.map((t) => t.text);  // read by the browser tests
  const measure = chart.ctx;  // its font is LABEL_FONT
  const longest = Math.max(0, ...ticks.map((t) => textWidth(chart, measure, t.text)));
  const wanted = Math.max(GUTTER_MIN, Math.ceil((longest + 10) / 8) * 8);
  if (wanted !== chart.gutterWidth) {
    chart.gutterWidth = wanted;
    g.style.width = `${wanted}px`;  // the plot's canvas takes the rest at the next frame
    chart.querySelector(".chart-body").style.setProperty("--gutter", `${wanted}px`);
  }
  const [w, h] = chart.box(g);
  const W = Math.round(w * dpr), H = Math.round(h * dpr);
  if (!W || !H) return;
  // drawn again only when a label moves: an unchanged canvas costs no commit
  const drawnKey = `${W}|${H}|${ph}|${ticks.map((t) => `${t.text}@${t.py}`).join(" ")}`;
  if (drawnKey === chart.gutterKey && g.width === W && g.height === H) return;
  chart.gutterKey = drawnKey;
  if (g.width !== W || g.height !== H) { g.width = W; g.height = H; }
  const ctx = g.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.font = LABEL_FONT;
  ctx.direction = "ltr";
  ctx.fillStyle = LABEL_COLOR;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of ticks) ctx.fillText(t.text, w - 5, Math.min(ph - 6, Math.max(6, t.py)));
}
