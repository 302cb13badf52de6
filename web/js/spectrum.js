// <sd-spectrum signal="motor.speed">: a signal's spectrum over its chart's window or a
// tag, from every sample in the cache (GET /api/spectrum): Welch's PSD in unit²/Hz on a
// log scale, or the amplitude spectrum in the signal's unit; frequency in Hz, linear or
// log. Opened from a chart's legend (panels.js). The plot's mapping is kept in
// ``this.plot`` so a test can find where a frequency is drawn.

import { drawSpectrogram } from "./spectrogram.js";
import { TRACE, PAD, context, drawAxes, frame, getJson, linear, loadPanel, logarithmic,
  rangeParams, rangeSelect, refreshWhileLive } from "./panels.js";

const SEGMENTS = [256, 512, 1024, 2048, 4096, 8192, 16384];
const DYNAMIC = 1e-9;  // a PSD axis spans at most this ratio below its peak

function select(options, value, title) {
  const s = document.createElement("select");
  s.title = title;
  for (const [v, label] of options) s.add(new Option(label, v));
  s.value = value;
  return s;
}

export class SdSpectrum extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.signal = this.getAttribute("signal") || "";
    this.method = select([["welch", "PSD (Welch)"], ["fft", "amplitude (FFT)"], ["spectrogram", "spectrogram"]], this.getAttribute("method") || "welch", "what is drawn");
    this.window = select(["hann", "hamming", "blackman", "rect"].map((w) => [w, w]), this.getAttribute("window") || "hann", "window of each transform");
    this.segment = select(SEGMENTS.map((n) => [String(n), `${n} samples`]), this.getAttribute("segment") || "1024", "Welch segment (half overlapping)");
    this.scale = select([["lin", "Hz linear"], ["log", "Hz log"]], this.getAttribute("scale") || "lin", "frequency axis");
    this.range = rangeSelect();
    const parts = frame(this, `spectrum · ${this.signal}`, [this.method, this.window, this.segment, this.scale, this.range]);
    this.canvas = parts.canvas;
    this.status = parts.status;
    parts.refresh.onclick = () => this.load();
    for (const s of [this.method, this.window, this.segment, this.range]) s.onchange = () => this.load();
    this.scale.onchange = () => this.draw();
    new ResizeObserver(() => this.draw()).observe(this.canvas);
    this.load();
    refreshWhileLive(this);  // a live chart's window moves: read it again now and then
  }

  /** Read the range (one read at a time: see loadPanel). */
  load(quiet = false) { return loadPanel(this, quiet); }

  /** Read the spectrum of the chosen range; the answer or the refusal is shown. */
  async read() {
    const gram = this.method.value === "spectrogram";
    this.segment.disabled = this.method.value === "fft";
    const range = rangeParams(this.range.value, this.chart);
    try {
      this.answer = gram
        ? await getJson("api/spectrogram", { signal: this.signal, window: this.window.value,
          segment: String(Math.min(4096, Number(this.segment.value))), ...range,
          columns: String(Math.max(1, Math.min(512, Math.round(this.canvas.clientWidth - PAD.left)))) })
        : await getJson("api/spectrum", { signal: this.signal, method: this.method.value,
          window: this.window.value, segment: this.segment.value, ...range });
    } catch (err) {
      this.answer = null;
      this.status.textContent = `no spectrum: ${err.message}`;
      this.status.classList.add("refused");
      this.dataset.state = "refused";
      this.draw();
      return;
    }
    const a = this.answer;
    this.status.classList.toggle("refused", a.irregular);
    this.status.textContent = `${a.samples} samples at ${a.rate_hz.toPrecision(6)} Hz · ` +
      `${gram ? `${a.psd.length} columns of ${a.segments_per_column} segments of ${a.segment}`
        : a.method === "welch" ? `${a.segments} segments of ${a.segment}` : `${a.segment}-point FFT`}` +
      (gram ? "" : ` · resolution ${a.resolution_hz.toPrecision(3)} Hz`) +
      (a.irregular ? ` · irregular: ${a.reason}` : "") +
      (a.skipped.length ? ` · ${a.skipped.length} damaged cache ranges left out` : "");
    this.draw();
    this.dataset.state = "drawn";
  }

  draw() {
    const { ctx, w, h } = context(this.canvas);
    const a = this.answer;
    this.plot = null;
    if (!a || !a.frequency_hz.length) return;
    if (a.psd) {  // a spectrogram
      const drawn = drawSpectrogram(ctx, w, h, a);
      this.canvas.setAttribute("aria-label", `spectrogram of ${this.signal}, 0 to ${a.rate_hz / 2} Hz`);
      if (drawn) this.plot = { spectrogram: true, ...drawn };
      return;
    }
    const log = this.scale.value === "log";
    const f = a.frequency_hz, v = a.value;
    const nyquist = a.rate_hz / 2;
    const x = log ? logarithmic(Math.max(a.resolution_hz, nyquist * 1e-5), nyquist, PAD.left, w - PAD.right)
      : linear(0, nyquist, PAD.left, w - PAD.right, Math.max(2, Math.floor((w - PAD.left) / 70)));
    if (!log) { x.lo = 0; x.hi = nyquist; }
    let top = 0;
    for (const y of v) if (y > top) top = y;
    const psd = a.method === "welch";
    let bottom = Infinity;
    for (const y of v) if (y > top * DYNAMIC && y < bottom) bottom = y;
    const y = psd && top > 0 ? logarithmic(bottom, top * 2, h - PAD.bottom, PAD.top)
      : linear(0, top * 1.05 || 1, h - PAD.bottom, PAD.top, Math.max(2, Math.floor(h / 40)));
    drawAxes(ctx, w, h, x, y, "Hz", a.unit);
    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top, w - PAD.left - PAD.right, h - PAD.top - PAD.bottom);
    ctx.clip();
    ctx.strokeStyle = TRACE;
    ctx.lineWidth = 1;
    ctx.beginPath();
    let started = false;
    for (let i = 0; i < f.length; i++) {
      if (v[i] === null || (log && f[i] <= 0)) continue;
      const py = y.map(psd ? Math.max(v[i], y.lo) : v[i]);
      const px = x.map(f[i]);
      if (started) ctx.lineTo(px, py); else { ctx.moveTo(px, py); started = true; }
    }
    ctx.stroke();
    ctx.restore();
    this.plot = { log, left: PAD.left, right: w - PAD.right, fmin: x.lo, fmax: x.hi };
    this.canvas.setAttribute("aria-label", `${a.method === "welch" ? "power spectral density" : "amplitude spectrum"} of ${this.signal}, 0 to ${nyquist} Hz`);
  }

  /** Where frequency ``hz`` is drawn, in CSS px from the canvas's left edge. */
  xOf(hz) {
    const p = this.plot;
    if (!p) return null;
    const share = p.log ? (Math.log10(hz) - Math.log10(p.fmin)) / (Math.log10(p.fmax) - Math.log10(p.fmin))
      : (hz - p.fmin) / (p.fmax - p.fmin);
    return p.left + share * (p.right - p.left);
  }
}

customElements.define("sd-spectrum", SdSpectrum);
