// <sd-value signal="env.state"> shows a signal's latest value (text, enum or number),
// its time, and whether it is stale.

import { app } from "./app.js";
import { fmt, limitLevel } from "./chartmath.js";

export class SdValue extends HTMLElement {
  connectedCallback() {
    if (!this.built) {
      this.built = true;
      this.innerHTML = `<span class="value-name"></span><output class="value-text">–</output>
        <small class="value-time"></small><button class="chart-remove" title="remove">×</button>`;
      this.querySelector(".value-name").textContent = this.signal;
      this.querySelector(".chart-remove").onclick = () => { this.remove(); app.layoutChanged(); };
    }
    app.register(this);
  }

  disconnectedCallback() { app.unregister(this); }

  get signal() { return this.getAttribute("signal") || ""; }
  get signals() { return [this.signal]; }

  draw(now) {
    const d = app.conn.data.get(this.signal);
    const info = app.conn.describe(this.signal);
    const out = this.querySelector(".value-text");
    const value = d ? d.latest : undefined;
    const text = value === undefined || (typeof value === "number" && !Number.isFinite(value))
      ? "–" : fmt(value);
    if (out.value !== text) out.value = text;
    const unit = info && info.unit ? ` ${info.unit}` : "";
    this.querySelector(".value-name").textContent = `${this.signal}${unit}`;
    this.querySelector(".value-time").textContent =
      d && d.latestMs ? new Date(d.latestMs).toISOString().slice(11, 19) : "";
    this.classList.toggle("stale", !d || now - d.latestMs > 3000);
    const level = limitLevel(info && info.limits, value);
    this.classList.toggle("warn", level === "warn");
    this.classList.toggle("alarm", level === "alarm");
  }
}

customElements.define("sd-value", SdValue);
