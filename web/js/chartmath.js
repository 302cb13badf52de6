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

/** Index of the first of ``start[0..n)`` (ascending) at or after ``t``. */
export function lowerBound(start, n, t) {
  let lo = 0, hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (start[mid] < t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** Fold buckets into ``out``'s columns over [t0, t1]. ``levels``: the server's memory,
 * finest first, each ``{n, width, a: {start, low, high, last}}`` (bucket starts in ms).
 * ``past``: columns from the cache ``{width, start, low, high, last}`` (null where a
 * column had none).
 *
 * A level no wider than ``maxWidth`` (ms; a paused chart passes its column width) is
 * fine: the finest one wherever it has data, a coarser one only before it begins (a
 * coarse bucket must end before finer data starts: no seam values). The cache's columns
 * fill what comes before the fine levels. A level wider than ``maxWidth`` would put a
 * sample up to a bucket away from its time: it is used only where the cache has nothing
 * (before the first or after the last of ``past``'s columns, or everywhere when ``past``
 * holds none), and not at all while ``past`` is null (the cache has not answered yet).
 * A pause longer than ten buckets (and 2.5 s) breaks the line. ``grid`` ({k, origin}):
 * columns on a grid fixed in time, a bucket starting at t in column floor(t k) - origin
 * (a live chart: the same bucket lands in the same column, shifted, frame after frame,
 * whatever the float rounding of t0). Returns ``out``, or null when there is nothing to
 * fold. */
export function foldColumns(levels, past, t0, t1, out, maxWidth = Infinity, grid = null) {
  const spans = [];  // [level, from, before]: bucket starts each level contributes
  let until = Infinity;  // where finer data begins
  let fineFrom = Infinity;  // where the fine levels begin
  // the cache's extent: coarse buckets meeting it are left out (they would misplace)
  let pastFrom = Infinity, pastTo = -Infinity;
  if (past && past.start.length) {
    pastFrom = past.start[0];
    pastTo = past.start[past.start.length - 1] + past.width;
  }
  for (let level = 0; level < levels.length && until > t0; level++) {
    const s = levels[level];
    if (!s.n) continue;
    const before = until === Infinity ? Infinity : until - s.width + 1;
    if (s.width <= maxWidth) {
      spans.push([level, t0 - s.width, before]);
      fineFrom = Math.min(fineFrom, s.a.start[0]);
    } else if (past) {  // only outside the cache's columns
      spans.push([level, t0 - s.width, Math.min(before, pastFrom - s.width + 1)]);
      if (pastTo > -Infinity && pastTo < before) {
        spans.push([level, Math.max(t0 - s.width, pastTo), before]);
      }
    }
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
  // oldest first, so that each column's "last" is its newest value: the coarse memory
  // before the cache, the cache, the coarse memory after it, then the fine levels
  const coarse = spans.filter(([level]) => levels[level].width > maxWidth);
  const fine = spans.filter(([level]) => levels[level].width <= maxWidth);
  const runs = [...coarse.filter(([, , before]) => before <= pastFrom).reverse(), null,
                ...coarse.filter(([, , before]) => before > pastFrom).reverse(),
                ...fine.reverse()];
  for (const span of runs) {
    if (span === null) {
      if (!past) continue;  // the cache, before the fine levels; placed by column middles
      const width = past.width, before = fineFrom === Infinity ? Infinity
        : fineFrom - width + 1;
      const { start } = past;
      for (let i = 0; i < start.length && start[i] < before && start[i] <= t1; i++) {
        if (past.low[i] === null) continue;
        fold(Math.floor((start[i] + width / 2 - t0) * k), past.low[i], past.high[i],
             past.last[i], start[i], width);
      }
      continue;
    }
    const [level, from, before] = span;
    if (!(before > from)) continue;
    const s = levels[level], a = s.a, breakMs = Math.max(s.width * 10, 2500);
    const start = a.start, lows = a.low, highs = a.high, lasts = a.last;
    // the hot loop (every bucket of every signal, every frame): fold() written out
    for (let i = lowerBound(start, s.n, from); i < s.n && start[i] < before &&
         start[i] <= t1; i++) {
      const x = grid ? Math.floor(start[i] * grid.k) - grid.origin : Math.floor((start[i] - t0) * k);
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

/** The value the trace shows at column ``x`` of folded columns: the last value of the
 * nearest column at or left of it that has samples, unless the line breaks after that
 * column (a gap of more than 2.5 s, as foldColumns marks it) or it lies more than 2.5 s
 * back. NaN where nothing is drawn. ``msPerColumn`` converts columns to time. */
export function valueAtColumn(col, x, msPerColumn) {
  if (!col) return NaN;
  const { count, last, gap } = col;
  const cols = count.length;
  if (x < 0 || x >= cols) return NaN;
  let j = x;
  while (j >= 0 && count[j] === 0) j--;
  if (j < 0) return NaN;
  if (j === x) return last[j];
  let next = x + 1;
  while (next < cols && count[next] === 0) next++;
  if (next < cols) return gap[next] ? NaN : last[j];
  return (x - j) * msPerColumn <= 2500 ? last[j] : NaN;
}

/** One vertical run of pixels per column: from the previous value through min..max;
 * columns without samples between two that have some get the line joining them.
 * ``xa``..``xb`` (columns, ``xb`` excluded): write only there, exactly the pixels a plot
 * of every column would put there (a live chart redraws only its newest columns). */
export function plotColumns(pixels, W, H, col, base, scale, rgba, xa = 0, xb = W) {
  const { low, high, last, count, gap } = col;
  const bottomRow = H - 1;
  // value -> row, clamped, without Math.round (this loop runs W times per signal)
  const row = (v) => {
    const r = bottomRow - (v - base) * scale + 0.5;
    return r <= 0 ? 0 : r >= bottomRow ? bottomRow : r | 0;
  };
  const run = (x, a, b) => {  // rows a..b of column x, either order
    if (x < xa || x >= xb) return;
    if (a > b) { const t = a; a = b; b = t; }
    for (let i = a * W + x, end = b * W + x; i <= end; i += W) pixels[i] = rgba;
  };
  // the line arrives at xa from the last column with samples before it
  let prev = -1, prevX = -1;
  for (let x = xa - 1; x >= 0; x--) if (count[x]) { prev = row(last[x]); prevX = x; break; }
  for (let x = xa; x < W; x++) {
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
    if (x >= xb) break;  // the join into the first column past xb was the last to write
    for (let i = top * W + x, end = bottom * W + x; i <= end; i += W) pixels[i] = rgba;
    prev = row(last[x]);
    prevX = x;
  }
  // A dot (3x3) at each column with samples where they lie 8 pixels apart or more (a
  // deep zoom: the samples show among the lines joining them), and at a sample with a
  // gap on both sides, which would be one pixel.
  const dot = (x, v) => {
    const r = row(v);
    for (let yy = Math.max(0, r - 1); yy <= Math.min(bottomRow, r + 1); yy++) {
      for (let xx = Math.max(xa, x - 1); xx <= Math.min(xb - 1, x + 1); xx++) pixels[yy * W + xx] = rgba;
    }
  };
  let n = 0, firstX = -1, lastX = -1;
  for (let x = 0; x < W; x++) if (count[x]) { n++; if (firstX < 0) firstX = x; lastX = x; }
  const sparse = n > 1 && (lastX - firstX) / (n - 1) >= 8;
  // dots reaching into xa..xb: at columns xa - 1 .. xb
  for (let x = Math.max(0, xa - 1), end = Math.min(W - 1, xb); x <= end; x++) {
    if (!count[x]) continue;
    if (sparse) { dot(x, last[x]); continue; }
    if (x !== firstX && !gap[x]) continue;  // not the start of a joined run
    let next = x + 1;  // a run of one column (the next one breaks, or there is none)
    while (next < W && !count[next]) next++;
    if (next >= W || gap[next]) dot(x, last[x]);
  }
}

/** ``col``'s extent over the columns with samples (into ``col.lo`` and ``col.hi``) and
 * whether they lie 8 columns apart or more (``col.sparse``: plotColumns dots each). */
export function scanColumns(col) {
  const { count, low, high } = col, W = count.length;
  let n = 0, firstX = -1, lastX = -1, lo = Infinity, hi = -Infinity;
  for (let x = 0; x < W; x++) {
    if (!count[x]) continue;
    n++;
    if (firstX < 0) firstX = x;
    lastX = x;
    if (low[x] < lo) lo = low[x];
    if (high[x] > hi) hi = high[x];
  }
  col.lo = lo;
  col.hi = hi;
  col.sparse = n > 1 && (lastX - firstX) / (n - 1) >= 8;
  return col;
}

/** Fold again the columns from ``xFrom`` on, from one level ``s`` ({n, a}) of buckets
 * ``width`` ms wide that covers the whole window [t0, t1] on ``grid`` (as foldColumns
 * takes it): what foldColumns would put there (a live chart folds only its newest
 * columns each frame). */
export function foldTail(s, width, t0, t1, out, xFrom, grid) {
  const cols = out.count.length;
  const { low, high, last, count, gap } = out;
  count.fill(0, xFrom);
  gap.fill(0, xFrom);
  const { k, origin } = grid, breakMs = Math.max(width * 10, 2500);
  const { start, low: lows, high: highs, last: lasts } = s.a;
  let i = lowerBound(start, s.n, t0 + xFrom / k - 2 * width);
  while (i < s.n && Math.floor(start[i] * k) - origin < xFrom) i++;
  // as foldColumns sees it: the bucket before, if it is inside the window
  let prev = i > 0 && Math.floor(start[i - 1] * k) - origin >= 0 ? start[i - 1] : -Infinity;
  for (; i < s.n && start[i] <= t1; i++) {
    const x = Math.floor(start[i] * k) - origin;
    if (x >= cols) continue;
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
  }
  return out;
}

export const DAY = 86400000;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                "Nov", "Dec"];

/** The time grid's step (ms): a round one giving at most eight lines over [t0, t1]. */
export function timeStep(t0, t1) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000,
                 60000, 120000, 300000, 600000, 900000, 1800000, 3600000, 7200000, 10800000,
                 21600000, 43200000];
  return steps.find((s) => ((t1 - t0) / s) <= 8) || DAY;
}

/** The shown zone's offset from UTC at ``ms`` (ms; 0 when showing UTC). */
export function zoneOffset(ms) { return utc ? 0 : -new Date(ms).getTimezoneOffset() * 60000; }

/** The time grid over [t0, t1]: its step and tick times, multiples of the step on the
 * wall clock shown (hours on the hour and days at midnight in a zone of UTC+5:30 too). */
export function timeTicks(t0, t1) {
  const step = timeStep(t0, t1);
  const off = zoneOffset(t0);
  const ticks = [];
  for (let t = Math.ceil((t0 + off) / step) * step - off; t <= t1; t += step) ticks.push(t);
  return { step, ticks };
}

/** "Nov 22": the date of ``ms`` in the shown zone. */
export function dateLabel(ms) {
  const d = wallClock(ms);
  return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
}

/** A time tick's label on an axis ``span`` ms wide: the date from a day's window on
 * (and at midnight on shorter ones), ms below a second's step. */
export function timeLabel(t, step, span) {
  const text = clock(t);
  if (span >= DAY) return step >= DAY ? dateLabel(t) : `${dateLabel(t)} ${text.slice(0, 5)}`;
  if (step >= 3600000 && text.startsWith("00:00")) return dateLabel(t);
  if (step < 1000) return text.slice(3, 12);
  return step < 60000 ? text.slice(0, 8) : text.slice(0, 5);
}

/** The cursor's time on an axis ``span`` ms wide: the date too from 6 hours on. */
export function cursorLabel(t, span) {
  return span >= DAY / 4 ? `${dateLabel(t)} ${clock(t)}` : clock(t);
}
