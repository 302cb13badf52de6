// The spectrogram view of a spectrum panel (GET /api/spectrogram): time across on the
// chart's axis, frequency up in Hz, each cell's PSD as a colour on a log scale spanning
// at most six decades below the loudest cell (a legend strip at the right says which).

import { timeLabel, timeTicks } from "./chartmath.js";
import { PAD, drawAxes, linear } from "./panels.js";

const DECADES = 6;
const LEGEND = 10;  // px of the colour strip

/** Dark blue through green to yellow: value 0..1 to [r, g, b]. */
function colour(v) {
  const stops = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104],
    [244, 136, 73], [254, 188, 43], [240, 249, 33]];
  const x = Math.min(1, Math.max(0, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

/** Draw ``a`` (an /api/spectrogram answer) into the context, ``w`` x ``h`` CSS px. */
export function drawSpectrogram(ctx, w, h, a) {
  const rows = a.psd.length, bins = a.frequency_hz.length;
  if (!rows || !bins) return null;
  const t0 = a.start_ms[0];
  const step = rows > 1 ? a.start_ms[1] - a.start_ms[0] : a.segment / a.rate_hz * 1000;
  const t1 = a.start_ms[rows - 1] + step;
  const right = w - PAD.right - LEGEND - 4;
  const nyquist = a.rate_hz / 2;
  const { ticks: times, step: tStep } = timeTicks(t0, t1);
  const x = { lo: t0, hi: t1, map: (t) => PAD.left + ((t - t0) / (t1 - t0)) * (right - PAD.left),
    ticks: times.map((t) => ({ v: t, label: timeLabel(t, tStep, t1 - t0) })) };
  const y = linear(0, nyquist, h - PAD.bottom, PAD.top, Math.max(2, Math.floor(h / 40)));
  let top = 0;
  for (const row of a.psd) for (const v of row) if (v > top) top = v;
  const floor = Math.log10(top || 1) - DECADES;
  const pw = Math.max(1, Math.round(right - PAD.left)), ph = Math.max(1, Math.round(h - PAD.bottom - PAD.top));
  const image = ctx.createImageData(pw, ph);
  // each pixel the loudest of the bins it covers, so a narrow line is never skipped
  const spans = [];
  for (let py = 0; py < ph; py++) {
    const b1 = Math.ceil((1 - py / ph) * bins), b0 = Math.floor((1 - (py + 1) / ph) * bins);
    spans.push([Math.max(0, Math.min(b0, bins - 1)), Math.max(b0 + 1, Math.min(b1, bins))]);
  }
  for (let px = 0; px < pw; px++) {
    const row = a.psd[Math.min(rows - 1, Math.floor((px / pw) * rows))];
    for (let py = 0; py < ph; py++) {
      let v = 0;
      for (let b = spans[py][0]; b < spans[py][1]; b++) if (row[b] > v) v = row[b];
      const c = colour(v > 0 ? (Math.log10(v) - floor) / DECADES : 0);
      const o = (py * pw + px) * 4;
      image.data[o] = c[0]; image.data[o + 1] = c[1]; image.data[o + 2] = c[2]; image.data[o + 3] = 255;
    }
  }
  // putImageData ignores the transform: drawn through a canvas of its own, scaled
  const tile = new OffscreenCanvas(pw, ph);
  tile.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tile, PAD.left, PAD.top, right - PAD.left, h - PAD.bottom - PAD.top);
  for (let i = 0; i < 64; i++) {
    const [r, g, b] = colour(i / 63);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(w - PAD.right - LEGEND, h - PAD.bottom - ((i + 1) / 64) * (h - PAD.bottom - PAD.top), LEGEND, (h - PAD.bottom - PAD.top) / 64 + 1);
  }
  ctx.fillStyle = getComputedStyle(ctx.canvas).color;
  drawAxes(ctx, w, h, x, y, "time", `Hz · colour: ${a.unit}, ${DECADES} decades to ${top.toPrecision(2)}`);
  return { x, y };
}
