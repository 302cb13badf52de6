// <sd-xy x="motor.speed" y="motor.torque">: one signal against another over the chart's
// window or a tag (GET /api/xy): at each x sample the last y at or before it, every k-th
// pair with each bucket's extremes, drawn as dots on axes in each signal's unit.
// Opened from a chart's legend (panels.js); ``this.plot`` keeps the mapping for tests.

import { TRACE, PAD, context, drawAxes, frame, getJson, linear, loadPanel, rangeParams, rangeSelect,
  refreshWhileLive } from "./panels.js";

export class SdXy extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.x = this.getAttribute("x") || "";
    this.y = this.getAttribute("y") || "";
    this.range = rangeSelect();
    const parts = frame(this, `XY · ${this.y} against ${this.x}`, [this.range]);
    this.canvas = parts.canvas;
    this.status = parts.status;
    parts.refresh.onclick = () => this.load();
    this.range.onchange = () => this.load();
    new ResizeObserver(() => this.draw()).observe(this.canvas);
    this.load();
    refreshWhileLive(this);  // a live chart's window moves: read it again now and then
  }

  /** Read the range (one read at a time: see loadPanel). */
  load(quiet = false) { return loadPanel(this, quiet); }

  /** Read the pairs of the chosen range; the answer or the refusal is shown. */
  async read() {
    const width = Math.max(200, this.canvas.clientWidth);
    const params = { x: this.x, y: this.y, points: String(Math.min(100000, width * 20)),
      ...rangeParams(this.range.value, this.chart) };
    try {
      this.answer = await getJson("api/xy", params);
    } catch (err) {
      this.answer = null;
      this.status.textContent = `no XY: ${err.message}`;
      this.status.classList.add("refused");
      this.dataset.state = "refused";
      this.draw();
      return;
    }
    const a = this.answer;
    this.status.classList.remove("refused");
    this.status.textContent = `${a.pairs} pairs (y: the last value at or before each x sample)` +
      (a.drawn < a.pairs ? ` · ${a.drawn} drawn: every k-th with each bucket's extremes` : "") +
      (a.skipped.length ? ` · ${a.skipped.length} damaged cache ranges left out` : "");
    this.draw();
    this.dataset.state = "drawn";
  }

  draw() {
    const { ctx, w, h } = context(this.canvas);
    const a = this.answer;
    this.plot = null;
    if (!a || !a.xs.length) return;
    const bounds = (vs) => {
      let lo = Infinity, hi = -Infinity;
      for (const v of vs) { if (v < lo) lo = v; if (v > hi) hi = v; }
      const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
      return [lo - pad, hi + pad];
    };
    const [x0, x1] = bounds(a.xs), [y0, y1] = bounds(a.ys);
    const x = linear(x0, x1, PAD.left, w - PAD.right, Math.max(2, Math.floor((w - PAD.left) / 70)));
    const y = linear(y0, y1, h - PAD.bottom, PAD.top, Math.max(2, Math.floor(h / 40)));
    drawAxes(ctx, w, h, x, y, `${this.x}${a.x_unit ? ` (${a.x_unit})` : ""}`,
      `${this.y}${a.y_unit ? ` (${a.y_unit})` : ""}`);
    ctx.fillStyle = TRACE;
    for (let i = 0; i < a.xs.length; i++) {
      ctx.fillRect(Math.round(x.map(a.xs[i])) - 1, Math.round(y.map(a.ys[i])) - 1, 2, 2);
    }
    this.plot = { x, y };
    this.canvas.setAttribute("aria-label", `${this.y} against ${this.x}, ${a.pairs} pairs`);
  }

  /** Where the pair (vx, vy) is drawn, in CSS px of the canvas. */
  at(vx, vy) { return this.plot ? [this.plot.x.map(vx), this.plot.y.map(vy)] : null; }
}

customElements.define("sd-xy", SdXy);
