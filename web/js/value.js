// <sd-value signal="env.state"> shows a signal's latest value (text, enum or number),
// its time (in the zone the header shows), and whether it is stale. The card keeps its
// size whatever the value: a text too long for it ends in "…" (the whole in its tooltip).

import { app } from "./app.js";
import { clock, fmt, limitLevel } from "./chartmath.js";

export class SdValue extends HTMLElement {
  connectedCallback() {
    if (!this.built) {
      this.built = true;
      // a <span>, not an <output>: that is a live region, read out at every change
      this.innerHTML = `<span class="value-name"></span>
        <button class="chart-remove" title="remove" aria-label="remove this value">×</button>
        <span class="value-text">–</span><small class="value-time"></small>`;
      this.querySelector(".value-name").textContent = this.signal;
      this.querySelector(".chart-remove").onclick = () => { this.remove(); app.layoutChanged(); };
      this.out = this.querySelector(".value-text");
      this.time = this.querySelector(".value-time");
    }
    app.register(this);
  }

  disconnectedCallback() { app.unregister(this); }

  get signal() { return this.getAttribute("signal") || ""; }
  get signals() { return [this.signal]; }

  draw(now) {
    const d = app.conn.data.get(this.signal);
    const info = app.conn.describe(this.signal);
    const value = d ? d.latest : undefined;
    const text = value === undefined || (typeof value === "number" && !Number.isFinite(value))
      ? "–" : fmt(value);
    if (this.out.textContent !== text) { this.out.textContent = text; this.out.title = text; }
    const unit = info && info.unit ? ` ${info.unit}` : "";
    const name = `${this.signal}${unit}`;
    const names = this.querySelector(".value-name");
    if (names.textContent !== name) { names.textContent = name; names.title = name; }
    this.classList.toggle("text", Boolean(info && info.type === "string"));  // a wider card
    const time = d && d.latestMs ? clock(d.latestMs).slice(0, 8) : "";
    if (this.time.textContent !== time) this.time.textContent = time;
    this.classList.toggle("stale", !d || now - d.latestMs > 3000);
    const level = limitLevel(info && info.limits, value);
    this.classList.toggle("warn", level === "warn");
    this.classList.toggle("alarm", level === "alarm");
  }
}

customElements.define("sd-value", SdValue);
