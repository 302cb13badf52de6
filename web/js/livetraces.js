// A live chart's traces drawn incrementally. Its pixel columns sit on a grid fixed in
// time (column c covers [c, c + 1) x the column's width in ms), so from one frame to
// the next the picture only moves left by whole columns: the folded columns and the
// pixels are shifted, and only what can differ from a full redraw is folded and
// plotted again: the columns new data reached (the last one was partial), the line
// joining into them and its dots, and the left edge (the first column with samples
// draws no line from the one that scrolled out). Anything else (a resize, another
// window, pause, other signals, a new y range, samples becoming sparse, other limit
// bands) draws it all again. The background (axes.js) moves with the pixels; a column
// where a time line appeared or went (its label now fits, or no longer) is painted
// again too, and the strip of time labels below the plot every frame. The result is
// what a full redraw of the same data gives, pixel for pixel;
// tests/stripchart/test_live_draw.py checks that on a scrolling chart.

import { fillBackdrop } from "./axes.js";
import { foldTail, plotColumns } from "./chartmath.js";

/** Whether two arrays hold the same values. */
function same(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether foldColumns would fold [t0, t1] of ``d`` from its finest level alone (the
 * coarser ones have no bucket it would use: they begin where the finest does). */
function finestAlone(d, t0, t1) {
  const s0 = d && d.levels[0];
  if (!s0 || !s0.n) return false;
  let until = s0.first;
  for (let level = 1; level < d.levels.length && until > t0; level++) {
    const s = d.levels[level];
    if (!s.n) continue;
    const i = s.lowerBound(t0);
    if (i < s.n && s.a.start[i] < until - d.widths[level] + 1 && s.a.start[i] <= t1) {
      return false;
    }
    until = Math.min(until, s.first);
  }
  return true;
}

export class LiveTraces {
  constructor() {
    /** what the pixels and columns show; null: nothing valid */
    this.shown = null;
    this.stats = { full: 0, incremental: 0, coarse: 0, rescaled: 0 };  // frames of each kind (read by the tests)
  }

  invalidate() { this.shown = null; }

  /** Shift the columns (``cols``, one per signal) and fold their new ones for the frame
   * whose window starts at column ``grid.origin`` (of ``grid.k`` a ms), whose time lines
   * are on ``lines`` (a flag per column). Returns the columns that must be plotted again
   * ([from, to) pairs) when the frame can be drawn so, else null (the caller folds and
   * plots everything, then calls ``drawn``). */
  advance(datas, cols, grid, t0, t1, W, key, lines) {
    const c = grid.origin;
    const shown = this.shown;
    if (!shown || shown.key !== key || !datas.every((d, i) => d && d === shown.datas[i])) {
      return null;
    }
    const dx = c - shown.c;
    if (dx < 0 || dx >= W) return null;
    if (!datas.every((d) => finestAlone(d, t0, t1))) { this.stats.coarse++; return null; }
    // the earliest column new data reached, and always the last shown one (partial)
    let xr = W - dx - 1;
    for (const d of datas) {
      const since = d.takeDirty(this);
      if (since < Infinity) xr = Math.min(xr, Math.floor(since * grid.k) - c);
    }
    xr = Math.max(0, xr);
    // column 0 always: a dot's arm there from a column now out of the window
    let from = xr, edge = 1;
    datas.forEach((d, i) => {
      const col = cols[i];
      if (dx) {
        for (const a of [col.low, col.high, col.last, col.count, col.gap]) a.copyWithin(0, dx, W);
      }
      // the first column with samples: no line in from a bucket now out of the window
      let x0 = 0;
      while (x0 < W && !col.count[x0]) x0++;
      if (x0 < xr && !col.gap[x0]) { col.gap[x0] = 1; edge = Math.max(edge, x0 + 2); }
      foldTail(d.levels[0], d.widths[0], t0, t1, col, xr, grid);
      // the line into the refolded columns starts at the last column with samples
      // before them, and its dot reaches one column further left
      let p = xr - 1;
      while (p >= 0 && !col.count[p]) p--;
      if (p >= 0) from = Math.min(from, p - 1);
    });
    if (dx) this.shiftPixels(dx, W);
    from = Math.max(0, from);
    const parts = edge >= from ? [[0, W]] : [[0, edge], [from, W]];
    // the columns before ``from`` whose time line came or went since (shifted)
    const was = shown.lines;
    for (let x = edge; x < from; x++) {
      if (was[x + dx] === lines[x]) continue;
      let end = x + 1;
      while (end < from && was[end + dx] !== lines[end]) end++;
      parts.push([x, end]);
      x = end;
    }
    return parts;
  }

  /** Move the pixels left by ``dx`` columns: the plot's rows as one block, so the last
   * ``dx`` columns of each row get the next row's first ones, which does not matter:
   * they are among the columns plotted again. */
  shiftPixels(dx, W) {
    this.pixels.copyWithin(0, dx, this.plotHeight * W);
  }

  /** Plot ``cols`` into ``pixels`` over the column ranges ``parts`` (all of them when
   * null), their background (``back``: rows, lines, columns, from axes.js) painted
   * first, and the strip below the plot always; signals in order, so overlaps are as a
   * full redraw has them. */
  plot(pixels, W, PH, cols, items, range, parts, back) {
    this.pixels = pixels;
    this.plotHeight = PH;
    const { rows, lines, columns } = back, H = rows.length;
    if (!parts) { fillBackdrop(pixels, W, 0, H, 0, W, rows, lines, columns); parts = [[0, W]]; }
    else {
      for (const [a, b] of parts) if (b > a) fillBackdrop(pixels, W, 0, PH, a, b, rows, lines, columns);
      fillBackdrop(pixels, W, PH, H, 0, W, rows, lines, columns);
    }
    if (!range) return;
    const scale = (PH - 1) / (range[1] - range[0]);
    for (const [a, b] of parts) {
      if (b <= a) continue;
      cols.forEach((col, i) => {
        if (col) plotColumns(pixels, W, PH, col, range[0], scale, items[i].rgba, a, b);
      });
    }
  }

  /** Whether the y range, any signal's sparseness (``col.sparse``, from scanColumns) or
   * the background's rows (``rows``: bands, value lines) differ from the frame shown
   * last: each changes every column. */
  changed(range, cols, rows) {
    const shown = this.shown;
    const changed = !shown || !range || !shown.range || shown.range[0] !== range[0] ||
      shown.range[1] !== range[1] ||
      cols.some((col, i) => Boolean(col && col.sparse) !== shown.sparse[i]) ||
      !same(rows, shown.rows);
    if (changed) this.stats.rescaled++;
    return changed;
  }

  /** Note what the pixels now show: the frame of column ``c`` over ``back``. */
  drawn(datas, cols, c, key, range, full, back) {
    this.stats[full ? "full" : "incremental"]++;
    for (const d of datas) if (d) d.takeDirty(this);
    this.shown = { key, c, range, datas: [...datas], rows: back.rows, lines: back.columns,
                   sparse: cols.map((col) => Boolean(col && col.sparse)) };
  }
}
