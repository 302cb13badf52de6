// The page's copy of each signal's history: buckets sorted by start time, per level.
// Updates arrive mostly at the end (live data), so merging is an append or a replace
// of the last bucket; anything else is a binary-search insert. Each level keeps at most
// its server-side span, so memory stays bounded however long the page stays open.

import { lowerBound } from "./chartmath.js";
import { FIELDS } from "./protocol.js";

export class Series {
  /** @param {number} spanMs */
  constructor(spanMs) {
    this.spanMs = spanMs;
    this.n = 0;
    this.capacity = 0;
    /** @type {Record<string, Float64Array>} */
    this.a = {};
    this.grow(1024);
  }

  grow(capacity) {
    for (const f of FIELDS) {
      const next = new Float64Array(capacity);
      if (this.a[f]) next.set(this.a[f].subarray(0, this.n));
      this.a[f] = next;
    }
    this.capacity = capacity;
  }

  /** Index of the first bucket starting at or after t. */
  lowerBound(t) {
    return lowerBound(this.a.start, this.n, t);
  }

  /** @param {import("./protocol.js").Buckets} b */
  merge(b) {
    const count = b.start.length;
    for (let i = 0; i < count; i++) {
      const t = b.start[i];
      let at;
      if (this.n === 0 || t > this.a.start[this.n - 1]) at = this.n;
      else if (t === this.a.start[this.n - 1]) at = this.n - 1;
      else at = this.lowerBound(t);
      if (at === this.n || this.a.start[at] !== t) {
        if (this.n === this.capacity) this.grow(this.capacity * 2);
        for (const f of FIELDS) this.a[f].copyWithin(at + 1, at, this.n);
        this.n++;
      }
      for (const f of FIELDS) this.a[f][at] = b[f][i];
    }
    this.trim();
  }

  trim() {
    if (this.n === 0) return;
    const cut = this.lowerBound(this.a.start[this.n - 1] - this.spanMs);
    if (cut > 0) {
      for (const f of FIELDS) this.a[f].copyWithin(0, cut, this.n);
      this.n -= cut;
    }
  }

  get first() { return this.n ? this.a.start[0] : Infinity; }
}

export class SignalData {
  /** @param {{width_ms: number, span_s: number}[]} levels */
  constructor(levels) {
    this.levels = levels.map((l) => new Series(l.span_s * 1000));
    this.widths = levels.map((l) => l.width_ms);
    this.latest = NaN;
    this.latestMs = 0;
    /** @type {[number, string][]} */
    this.text = [];
    /** per live chart drawing this signal: the earliest finest-level bucket start (ms)
     * merged since it last looked (what it must fold again) */
    this.dirty = new Map();
  }

  /** The earliest finest-level bucket start merged since ``key`` last asked (-Infinity
   * the first time: all of it), and start again from none. */
  takeDirty(key) {
    const since = this.dirty.has(key) ? this.dirty.get(key) : -Infinity;
    this.dirty.set(key, Infinity);
    return since;
  }

  ingest(level, buckets) {
    this.levels[level].merge(buckets);
    const n = buckets.start.length;
    if (level === 0 && n && this.dirty.size) {
      let first = Infinity;
      for (let i = 0; i < n; i++) if (buckets.start[i] < first) first = buckets.start[i];
      for (const [key, since] of this.dirty) if (first < since) this.dirty.set(key, first);
    }
    for (let i = 0; i < n; i++) {
      if (buckets.lastMs[i] >= this.latestMs) {
        this.latestMs = buckets.lastMs[i];
        this.latest = buckets.last[i];
      }
    }
  }

  ingestText(values) {
    for (const [t, v] of values) {
      this.text.push([t, v]);
      if (t >= this.latestMs) { this.latestMs = t; this.latest = v; }
    }
    if (this.text.length > 200) this.text.splice(0, this.text.length - 200);
  }

  /** The finest level whose history covers t0, else the coarsest. */
  levelFor(t0) {
    for (let i = 0; i < this.levels.length; i++) {
      if (this.levels[i].n && this.levels[i].first <= t0) return i;
    }
    return this.levels.length - 1;
  }

  /** Value at time t: the last value of the newest bucket starting at or before t, from
   * the finest level that reaches back to t; NaN in a gap (as the chart breaks its line). */
  valueAt(t) {
    const level = this.levelFor(t);
    const s = this.levels[level];
    const i = s.lowerBound(t + 1) - 1;
    if (i < 0 || t - s.a.start[i] > Math.max(this.widths[level] * 10, 2500)) return NaN;
    return s.a.last[i];
  }
}
