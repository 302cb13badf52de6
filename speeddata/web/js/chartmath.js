// Chart maths with no DOM and no connection: number and time labels, round ticks, the
// autoscale range, folding buckets into pixel columns and plotting those columns into a
// pixel buffer. chart.js draws with these; tests/stripchart/test_chartmath.py runs them
// on their own in Chromium, on data whose true picture is known.

export function fmt(v) {
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return "–";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(3) : v.toFixed(a >= 100 ? 1 : 3);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

let utc = false;
/** Show times in UTC (true) or in the browser's zone (false, the default). */
export function useUtc(on) { utc = Boolean(on); }
export function usingUtc() { return utc; }

/** A shifted copy of the instant whose local fields read as the chosen zone's. */
export function wallClock(ms) {
  const d = new Date(ms);
  return utc ? new Date(ms + d.getTimezoneOffset() * 60000) : d;
}

/** Wall-clock time HH:MM:SS.mmm, local or UTC (the page header says which). */
export function clock(ms) {
  const d = wallClock(ms);
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
  if (a >= 1e6 || step < 1e-4) {  // as many digits as the step has below the value's own
    return v.toExponential(Math.max(0, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step) + 1e-9)));
  }
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

/** Buffers for ``cols`` pixel columns: per column min, max, last, sample count, and
 * whether the line breaks before it. */
export function newColumns(cols) {
  return { low: new Float64Array(cols), high: new Float64Array(cols),
           last: new Float64Array(cols), count: new Uint32Array(cols),
           gap: new Uint8Array(cols), lo: 0, hi: 0 };
}

function lowerBound(start, n, t) {
  let lo = 0, hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (start[mid] < t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** Fold buckets into ``out``'s columns over [t0, t1]. ``levels``: finest first, each
 * ``{n, width, a: {start, low, high, last}}`` (bucket starts in ms). ``past``: columns
 * from the cache ``{width, start, low, high, last}`` (null where a column had none), used
 * only before the levels begin. The finest level wherever it has data, a coarser one only
 * before it begins (a coarse bucket must end before finer data starts: no seam values);
 * a pause longer than ten buckets (and 2.5 s) breaks the line. Returns ``out``, or null
 * when there is nothing to fold. */
export function foldColumns(levels, past, t0, t1, out) {
  const spans = [];  // [level, from, before): bucket starts each level contributes
  let until = Infinity;  // where finer data begins
  for (let level = 0; level < levels.length && until > t0; level++) {
    const s = levels[level];
    if (!s.n) continue;
    spans.push([level, t0 - s.width, until === Infinity ? Infinity : until - s.width + 1]);
    until = Math.min(until, s.a.start[0]);
  }
  if (!spans.length && !past) return null;
  const cols = out.count.length;
  const { low, high, last, count, gap } = out;
  count.fill(0);
  gap.fill(0);
  const k = cols / (t1 - t0);
  let lo = Infinity, hi = -Infinity, prev = -Infinity;
  const fold = (x, l, u, z, startMs, width) => {
    if (x < 0 || x >= cols) return;
    if (count[x] === 0) { low[x] = l; high[x] = u; }
    else { if (l < low[x]) low[x] = l; if (u > high[x]) high[x] = u; }
    last[x] = z;
    count[x]++;
    if (startMs - prev > Math.max(width * 10, 2500) && count[x] === 1) gap[x] = 1;
    prev = startMs;
    if (l < lo) lo = l;
    if (u > hi) hi = u;
  };
  if (past) {  // the cache, before the server's memory begins; placed by column middles
    const width = past.width, before = until === Infinity ? Infinity : until - width + 1;
    const { start } = past;
    for (let i = 0; i < start.length && start[i] < before && start[i] <= t1; i++) {
      if (past.low[i] === null) continue;
      fold(Math.floor((start[i] + width / 2 - t0) * k), past.low[i], past.high[i],
           past.last[i], start[i], width);
    }
  }
  for (let j = spans.length - 1; j >= 0; j--) {  // oldest (coarsest) first
    const [level, from, before] = spans[j];
    const s = levels[level], a = s.a, breakMs = Math.max(s.width * 10, 2500);
    const start = a.start, lows = a.low, highs = a.high, lasts = a.last;
    // the hot loop (every bucket of every signal, every frame): fold() written out
    for (let i = lowerBound(start, s.n, from); i < s.n && start[i] < before &&
         start[i] <= t1; i++) {
      const x = Math.floor((start[i] - t0) * k);
      if (x < 0 || x >= cols) continue;
      const l = lows[i], u = highs[i];
      if (count[x] === 0) {
        low[x] = l; high[x] = u;
        if (start[i] - prev > breakMs) gap[x] = 1;
      } else {
        if (l < low[x]) low[x] = l;
        if (u > high[x]) high[x] = u;
      }
      last[x] = lasts[i];
      count[x]++;
      prev = start[i];
      if (l < lo) lo = l;
      if (u > hi) hi = u;
    }
  }
  out.lo = lo;
  out.hi = hi;
  return out;
}

/** One vertical run of pixels per column: from the previous value through min..max;
 * columns without samples between two that have some get the line joining them. */
export function plotColumns(pixels, W, H, col, base, scale, rgba) {
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

/** The time grid's step (ms): a round one giving at most eight lines over [t0, t1]. */
export function timeStep(t0, t1) {
  const steps = [100, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000,
                 600000, 900000, 1800000, 3600000, 7200000, 10800000, 21600000, 43200000];
  return steps.find((s) => ((t1 - t0) / s) <= 8) || 86400000;
}
