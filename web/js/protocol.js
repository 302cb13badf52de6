// Frames from the server: u32 JSON length, JSON header, padding to 8, float64 arrays.
// The arrays are read as Float64Array views over the received buffer (no copy).

export const FIELDS = ["start", "low", "high", "last", "lastMs"];

/**
 * @typedef {{start: Float64Array, low: Float64Array, high: Float64Array,
 *            last: Float64Array, lastMs: Float64Array}} Buckets
 * @typedef {{header: any, series: {signal: string, level: number, buckets: Buckets}[]}} Frame
 */

const decoder = new TextDecoder();

/** @param {ArrayBuffer} buffer @returns {Frame} */
export function decodeFrame(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(decoder.decode(new Uint8Array(buffer, 4, length)));
  let offset = 4 + length;
  offset += (8 - (offset % 8)) % 8;
  const series = [];
  for (const entry of header.series) {
    /** @type {any} */
    const buckets = {};
    for (const name of FIELDS) {
      buckets[name] = new Float64Array(buffer, offset, entry.n);
      offset += 8 * entry.n;
    }
    series.push({ signal: entry.signal, level: entry.level, buckets });
  }
  return { header, series };
}
