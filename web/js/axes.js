// A chart's axes: what lies beneath the traces (the card's colour, the limit bands, the
// value and time lines) as a colour per device pixel, the time labels in the strip below
// the plot, the value labels in the gutter left of it.
//
// The plot's canvas is opaque: the compositor then copies it instead of blending it over
// the page, and nothing is drawn beneath the traces with canvas calls. The background is
// in the chart's pixels, as the traces are, from two colours per row (without and with
// a time line) and one flag per column (a time line there): livetraces.js shifts it with
// the traces and paints it again only where they are painted again, so a frame drawn
// incrementally is still the same as one drawn in full.

import { app } from "./app.js";
import { niceTicks, tickLabel, timeLabel, timeTicks } from "./chartmath.js";

export const GUTTER_MIN = 32;  // CSS px left of the plot for the value labels, at least
const BANDS = { warn: [245, 197, 24, 0.16], alarm: [214, 39, 40, 0.14] };
export const LABEL_FONT = "11px system-ui, sans-serif";
const LABEL_COLOR = "rgba(128,128,128,0.95)";
const GRID = [128, 128, 128, 0.25];  // a line, value or time, over what is beneath it
const TICK = 4;  // CSS px: a time line's tick into the strip below the plot

/** ``rgba`` (0xAABBGGRR, as ImageData's bytes read on a little-endian machine) with
 * the colour [r, g, b, alpha] laid over it. */
export function over(rgba, [r, g, b, a]) {
  const mix = (under, top) => Math.round(under * (1 - a) + top * a);
  return (0xff << 24 | mix((rgba >>> 16) & 255, b) << 16 | mix((rgba >>> 8) & 255, g) << 8 |
          mix(rgba & 255, r)) >>> 0;
}

/** The colour the chart's card shows (its background, or the first one behind it that
 * is not transparent; white if none), as 0xAABBGGRR. Read from the style, which the
 * caller does only when its canvas changes size or the colour scheme changes. */
export function cardColor(el) {
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const m = getComputedStyle(e).backgroundColor.match(/[\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0)) {
      const [r, g, b] = m.map(Number);
      return (0xff << 24 | b << 16 | g << 8 | r) >>> 0;
    }
  }
  return 0xffffffff;
}

/** A label's width in CSS px (LABEL_FONT), remembered: the same few labels are
 * measured every frame. */
export function textWidth(chart, ctx, text) {
  if (!chart.widths || chart.widths.size > 500) chart.widths = new Map();
  let width = chart.widths.get(text);
  if (width === undefined) { width = ctx.measureText(text).width; chart.widths.set(text, width); }
  return width;
}

/** The time lines of [t0, t1] over ``W`` device columns: ``columns`` (1 where a line
 * is) and the labels ({x: CSS px, text}). A line sits on column round((t - t0) x W /
 * (t1 - t0)), so on a live chart it moves by whole columns as the window does. A label
 * that would run into the one before it is left out; a line whose label the right edge
 * would cut is not drawn (alone, it reads as a stray line). */
export function timeLines(chart, W, w, dpr, t0, t1) {
  const columns = new Uint8Array(W);
  const thick = Math.max(1, Math.round(dpr));
  const { step, ticks } = timeTicks(t0, t1);
  const labels = [];
  let free = 0;  // where the next label may start
  for (const t of ticks) {
    const X = Math.round(((t - t0) * W) / (t1 - t0));
    if (X < 0 || X >= W) continue;
    const x = X / dpr;
    const text = timeLabel(t, step, t1 - t0);
    const width = textWidth(chart, chart.ctx, text);
    if (x + 2 + width > w) continue;
    columns.fill(1, X, Math.min(W, X + thick));
    if (x + 2 >= free) {
      labels.push({ x: x + 2, text });
      free = x + 2 + width + 8;
    }
  }
  chart.xTicks = labels.map((l) => l.text);  // read by the browser tests
  return { columns, labels };
}

/** Per device row (``H`` of them, the plot's ``PH`` first, then the strip below it):
 * the colour beneath the traces without (``rows``) and with (``lines``) a time line
 * crossing it, and the value ticks for the gutter ({text, py: CSS px}). The card, then
 * the bands beyond each signal's limits (amber past warn, red past alarm), then the
 * value lines; a time line is laid over the card and bands only, as the value lines
 * are, so where two lines cross they are as faint as either. */
export function backdropRows(chart, H, PH, dpr, range, y, card) {
  const rows = new Uint32Array(H), lines = new Uint32Array(H);
  const thick = Math.max(1, Math.round(dpr));
  const base = new Uint32Array(PH).fill(card);
  const line = new Uint8Array(PH);
  let ticks = [];
  if (range) {
    const edge = (v) => Math.round(Math.min(PH, Math.max(0, y(v) * dpr)));
    for (const item of chart.items) {
      const info = app.conn.describe(item.id);
      if (!info || !info.limits) continue;
      for (const name of ["warn", "alarm"]) {
        const b = info.limits[name];
        if (!b) continue;
        if (b[1] !== null) for (let r = 0, top = edge(b[1]); r < top; r++) base[r] = over(base[r], BANDS[name]);
        if (b[0] !== null) for (let r = edge(b[0]); r < PH; r++) base[r] = over(base[r], BANDS[name]);
      }
    }
    const nice = niceTicks(range[0], range[1], Math.max(2, Math.floor(PH / dpr / 40)));
    for (const v of nice.ticks) {
      const R = Math.round(y(v) * dpr);
      if (R >= 0 && R < PH) line.fill(1, R, Math.min(PH, R + thick));
    }
    ticks = nice.ticks.map((v) => ({ text: tickLabel(v, nice.step), py: y(v) }));
  }
  for (let r = 0; r < PH; r++) {
    lines[r] = over(base[r], GRID);
    rows[r] = line[r] ? lines[r] : base[r];
  }
  // the strip: the plot's bottom line across it, the time lines' ticks into it
  const grid = over(card, GRID), tickEnd = PH + Math.round(TICK * dpr);
  for (let r = PH; r < H; r++) {
    rows[r] = r < PH + thick ? grid : card;
    lines[r] = r < tickEnd ? grid : rows[r];
  }
  return { rows, lines, ticks };
}

/** Paint the background into rows [y0, y1) and columns [a, b) of ``pixels``. */
export function fillBackdrop(pixels, W, y0, y1, a, b, rows, lines, columns) {
  for (let r = y0; r < y1; r++) {
    const plain = rows[r], crossed = lines[r];
    for (let x = a, i = r * W + a; x < b; x++, i++) pixels[i] = columns[x] ? crossed : plain;
  }
}

/** A label's pixels as the canvas draws it (LABEL_FONT, LABEL_COLOR) over ``card``: a
 * strip's height of rows (``rows`` device px, its baseline 3 CSS px above the bottom),
 * remembered per text and colour. */
function labelImage(chart, text, card, dpr, rows) {
  const key = `${text}|${card}|${dpr}|${rows}`;
  if (!chart.labelImages || chart.labelImages.size > 200) chart.labelImages = new Map();
  let image = chart.labelImages.get(key);
  if (image) return image;
  const width = Math.max(1, Math.ceil((textWidth(chart, chart.ctx, text) + 2) * dpr));
  const canvas = new OffscreenCanvas(width, rows);
  const ctx = canvas.getContext("2d", { alpha: false, willReadFrequently: true });
  ctx.fillStyle = `rgb(${card & 255}, ${(card >>> 8) & 255}, ${(card >>> 16) & 255})`;
  ctx.fillRect(0, 0, width, rows);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.font = LABEL_FONT;
  ctx.direction = "ltr";
  ctx.fillStyle = LABEL_COLOR;
  ctx.fillText(text, 0, rows / dpr - 3);
  image = { width, pixels: new Uint32Array(ctx.getImageData(0, 0, width, rows).data.buffer) };
  chart.labelImages.set(key, image);
  return image;
}

/** The time labels into the strip below the plot (rows PH..H of ``pixels``): each
 * label's text pixels, drawn once per text, so a frame makes no canvas call but
 * putImageData. */
export function putTimeLabels(chart, pixels, W, PH, H, labels, dpr, card) {
  const rows = H - PH;
  for (const l of labels) {
    const { width, pixels: text } = labelImage(chart, l.text, card, dpr, rows);
    const X = Math.round(l.x * dpr), end = Math.min(width, W - X);
    for (let r = 0; r < rows; r++) {
      for (let x = Math.max(0, -X), i = r * width + x; x < end; x++, i++) {
        if (text[i] !== card) pixels[(PH + r) * W + X + x] = text[i];  // the ticks stay
      }
    }
  }
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
