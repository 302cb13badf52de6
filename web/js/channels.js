// Channels: what is registered (rate, signals, limits, fingerprint, loss), what arrives
// unregistered, and a form to register a schema; retiring asks first.

import { call } from "./mark.js";
import { clock } from "./chartmath.js";

const message = document.getElementById("message");
/** Names of the channels registered, as of the last refresh (to ask before replacing). */
let registered = new Set();

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  return td;
}

function ago(ms, nowMs) {
  if (!ms) return "never";
  const s = Math.max(0, (nowMs - ms) / 1000);
  return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago`
    : clock(ms);
}

function signalsText(channel) {
  return channel.signals.map((s) => {
    const limits = s.limits ? Object.entries(s.limits).filter(([, v]) => v)
      .map(([level, [lo, hi]]) => `${level} ${lo ?? "-∞"}..${hi ?? "∞"}`).join(", ") : "";
    return `${s.name}${s.unit ? ` [${s.unit}]` : ""} ${s.type}${limits ? ` (${limits})` : ""}`;
  }).join("\n");
}

/** Loss of one channel between its senders and the relay: the last ten seconds, then
 * since the senders' first reports. */
function lossText(rows) {
  if (!rows.length) return "no reports";
  const sum = (key) => rows.reduce((n, r) => n + r[key], 0);
  const pct = (lost, sent) => (sent ? (100 * lost / sent).toFixed(1) : "0.0");
  return `${sum("recent_lost")} of ${sum("recent_sent")} in 10 s; ` +
    `${sum("lost")} of ${sum("sent")} (${pct(sum("lost"), sum("sent"))} %) in all`;
}

/** A sender's clock as its time probes measured it: "clock +3.2 s (± 0.1 ms)", the bound
 * rounded up (speeddata.cli.render.format_clock says it the same way). */
export function clockText(offsetNs, uncertaintyNs) {
  const size = Math.abs(offsetNs);
  const sign = offsetNs < 0 ? "-" : "+";
  const offset = size >= 1e9 ? `${(size / 1e9).toFixed(1)} s`
    : size >= 1e5 ? `${(size / 1e6).toFixed(1)} ms` : `${(size / 1e3).toFixed(0)} µs`;
  const bound = uncertaintyNs >= 1e9 ? `${(Math.ceil(uncertaintyNs / 1e8) / 10).toFixed(1)} s`
    : `${(Math.ceil(uncertaintyNs / 1e5) / 10).toFixed(1)} ms`;
  return `clock ${sign}${offset} (± ${bound})`;
}

/** The clocks of one channel's senders (measured by their probes), one line each. */
function clocksText(rows) {
  const measured = rows.filter((r) => r.clock_offset_ns !== null && r.clock_offset_ns !== undefined);
  if (!measured.length) return "not measured";
  return measured.map((r) => clockText(r.clock_offset_ns, r.clock_uncertainty_ns) +
    (measured.length > 1 ? ` from ${r.source}` : "")).join("\n");
}

function chartLink(channel) {
  const numbers = channel.signals.filter((s) => s.kind === "number").map((s) => s.id);
  if (!numbers.length) return "";
  const a = document.createElement("a");
  a.href = `./#layout=${encodeURIComponent(JSON.stringify([{ chart: numbers.join(" "), window: 30 }]))}`;
  a.textContent = "chart";
  return a;
}

function retireButton(channel) {
  const b = document.createElement("button");
  b.textContent = "retire";
  b.onclick = async () => {
    if (!confirm(`Retire channel ${channel.name}? The relay stops accepting its data; ` +
                 "what is cached stays readable and exportable.")) return;
    try {
      await call("DELETE", `/api/channels/${encodeURIComponent(channel.name)}`);
      message.value = `retired ${channel.name}`;
      refresh();
    } catch (err) { message.value = `retiring ${channel.name} failed: ${err.message}`; }
  };
  return b;
}

async function refresh() {
  try {
    const [found, loss] = await Promise.all([call("GET", "/api/channels"),
      call("GET", "/api/loss")]);
    const now = found.server_ms;
    registered = new Set(found.channels.map((c) => c.name));
    document.querySelector("#channels tbody").replaceChildren(...found.channels.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.channel = c.name;
      const name = cell(c.name);
      name.title = c.doc || "";
      const signals = cell(signalsText(c));
      signals.className = "signals";
      tr.append(name, cell(`${c.rate_hz} Hz`), cell(ago(c.last_seen_ms, now)), signals,
        cell(c.fingerprint), cell(lossText(loss.senders.filter((r) => r.channel === c.name))),
        cell(clocksText(loss.senders.filter((r) => r.channel === c.name && !r.report_only))),
        cell(chartLink(c)), cell(retireButton(c)));
      return tr;
    }));
    document.getElementById("unknown-section").hidden = !found.unknown.length;
    document.querySelector("#unknown tbody").replaceChildren(...found.unknown.map((u) => {
      const tr = document.createElement("tr");
      tr.append(cell(u.fingerprint), cell(u.source ?? "?"), cell(u.count),
        cell(ago(u.last_seen_ns / 1e6, now)));
      return tr;
    }));
  } catch (err) {
    message.value = `server unreachable: ${err.message}`;
  }
}

document.getElementById("schema-file").onchange = async (e) => {
  const file = e.target.files[0];
  if (file) document.getElementById("schema").value = await file.text();
};

document.getElementById("register").onclick = async () => {
  let schema;
  try {
    schema = JSON.parse(document.getElementById("schema").value);
  } catch (err) {
    message.value = `not JSON: ${err.message}`;
    return;
  }
  // another schema under a registered name is refused (409) unless the request says
  // replace: ask first (the same schema again changes nothing either way)
  const replace = registered.has(schema?.name);
  if (replace && !confirm(`Channel ${schema.name} is registered: replace its schema with ` +
                          "this one? Its cached data keeps the schema it was written with.")) {
    message.value = `not registered: ${schema.name} kept as it is`;
    return;
  }
  try {
    const channel = await call("POST", "/api/channels", replace ? { schema, replace } : schema);
    message.value = `registered ${channel.name} (fingerprint ${channel.fingerprint}): ` +
      "send to the relay now, no restart needed";
    refresh();
  } catch (err) { message.value = `not registered: ${err.message}`; }
};

refresh();
setInterval(refresh, 2000);
