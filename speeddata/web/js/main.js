// Entry point: the app first, then the custom elements (which register with it), then
// the controls in the header.

import { app, buildElement, loadLayoutFromUrl } from "./app.js";
import "./chart.js";
import { clock, fmt, useUtc, usingUtc } from "./chartmath.js";
import "./value.js";
import { setupMark } from "./mark.js";

loadLayoutFromUrl();

const state = document.getElementById("state");
/** The connection pill: state, the group the server draws from, what this page lost. */
function showState() {
  const conn = app.conn;
  let text = conn.state;
  if (conn.state === "connected") {
    text += conn.source === "decimated" ? " · decimated" : " · every sample";
    if (conn.dropped) text += ` · ${conn.dropped} frame${conn.dropped === 1 ? "" : "s"} skipped`;
  }
  if (state.textContent !== text) state.textContent = text;
  state.className = `state ${conn.state}`;
  state.title = conn.lastError ? `last server error: ${conn.lastError}` : "";
}
app.conn.addEventListener("state", (e) => {
  showState();
  document.body.classList.toggle("offline", e.detail !== "connected");
});
app.conn.addEventListener("servererror", showState);
// the axes' zone: the browser's, or UTC (a click switches; the choice is remembered)
const zone = document.createElement("button");
zone.className = "zone";
zone.title = "times in this browser's zone or in UTC: click to switch";
function showZone() {
  zone.textContent = usingUtc() ? "UTC"
    : `local time (${Intl.DateTimeFormat().resolvedOptions().timeZone})`;
}
zone.onclick = () => {
  useUtc(!usingUtc());
  localStorage.setItem("speeddata.utc", usingUtc() ? "1" : "");
  showZone();
};
useUtc(localStorage.getItem("speeddata.utc") === "1");
showZone();
state.insertAdjacentElement("afterend", zone);
setInterval(showState, 1000);

// -- out of limits: a badge listing what is, and since when ---------------------------
const badge = document.getElementById("alarms");
async function showAlarms() {
  let alarms = [];
  try {
    const answer = await fetch("api/alarms");
    if (answer.ok) alarms = (await answer.json()).alarms;
  } catch { /* the connection pill already says the server is away */ }
  badge.hidden = !alarms.length;
  if (!alarms.length) return;
  const worst = alarms.some((a) => a.level === "alarm") ? "alarm" : "warn";
  badge.className = `alarms ${worst}`;
  badge.textContent = `⚠ ${alarms.length} out of limits`;
  badge.title = alarms.map((a) => `${a.signal}: ${a.level}, ${fmt(a.value)} since ` +
    clock(a.since_ms)).join("\n");
}
showAlarms();
setInterval(showAlarms, 2000);

// -- loss: datagrams lost between senders and the relay, or on the way to this server --
const lossBadge = document.getElementById("loss");
async function showLoss() {
  let found = null;
  try {
    const answer = await fetch("api/loss");
    if (answer.ok) found = await answer.json();
  } catch { /* the connection pill already says the server is away */ }
  const rows = [];
  for (const r of found?.senders ?? []) rows.push({ hop: "sender → relay", ...r });
  for (const [group, list] of Object.entries(found?.multicast ?? {})) {
    for (const r of list) rows.push({ hop: `relay → this page (${group})`, ...r });
  }
  const recent = rows.filter((r) => r.recent_lost > 0);
  lossBadge.hidden = !recent.length;
  if (!recent.length) return;
  const lost = recent.reduce((n, r) => n + r.recent_lost, 0);
  const sent = recent.reduce((n, r) => n + r.recent_sent, 0);
  lossBadge.textContent = `⚠ ${lost} lost in 10 s (${(100 * lost / sent).toFixed(1)} %)`;
  // who reported it, and how far to believe it: the server says (trust, report_only)
  const doubt = (r) => (r.trust === "outside allow" ? " (reported from outside [relay] " +
    "allow: cannot be trusted)" : "") + (r.report_only ? " (reports only, no data)" : "");
  lossBadge.title = recent.map((r) => `${r.hop}: ${r.channel} reported by ${r.source}: ` +
    `${r.recent_lost} of ${r.recent_sent} in the last 10 s, ${r.lost} of ${r.sent} ` +
    "since its first report" + doubt(r)).join("\n");
}
showLoss();
setInterval(showLoss, 2000);

// -- signal picker ------------------------------------------------------------------------
const picker = document.getElementById("picker");
const list = document.getElementById("picker-list");
app.conn.addEventListener("channels", (e) => {
  // rebuilt with fresh rates every few seconds: what the user ticked stays ticked
  const ticked = new Set([...list.querySelectorAll("input:checked")].map((i) => i.value));
  list.innerHTML = "";
  for (const channel of e.detail) {
    const group = document.createElement("fieldset");
    group.innerHTML = `<legend></legend>`;
    group.querySelector("legend").textContent = `${channel.name} (${channel.rate_hz} Hz)`;
    for (const s of channel.signals) {
      const label = document.createElement("label");
      label.innerHTML = `<input type="checkbox"> <span></span>`;
      label.querySelector("input").value = s.id;
      label.querySelector("input").dataset.kind = s.kind;
      label.querySelector("input").checked = ticked.has(s.id);
      label.querySelector("span").textContent = `${s.name}${s.unit ? ` [${s.unit}]` : ""}`;
      label.title = s.doc || s.type;
      group.append(label);
    }
    list.append(group);
  }
});
document.getElementById("pick").onclick = () => picker.showModal();
document.getElementById("picker-cancel").onclick = () => picker.close();
document.getElementById("picker-add").onclick = () => {
  const checked = [...list.querySelectorAll("input:checked")];
  const numbers = checked.filter((i) => i.dataset.kind === "number").map((i) => i.value);
  const texts = checked.filter((i) => i.dataset.kind !== "number").map((i) => i.value);
  const window = Number(document.getElementById("picker-window").value);
  const root = document.getElementById("layout");
  if (numbers.length) root.append(buildElement({ chart: numbers.join(" "), window }));
  for (const t of texts) root.append(buildElement({ value: t }));
  for (const i of checked) i.checked = false;
  picker.close();
};

// -- pause all, share ---------------------------------------------------------------------
const pauseAll = document.getElementById("pause-all");
pauseAll.onclick = () => {
  const charts = [...document.querySelectorAll("sd-chart")];
  const pause = !charts.every((c) => c.paused);
  for (const c of charts) c.setPaused(pause);
  pauseAll.textContent = pause ? "resume all" : "pause all";
};
document.addEventListener("keydown", (e) => {
  if (e.key === " " && e.target === document.body) { e.preventDefault(); pauseAll.click(); }
});
document.getElementById("share").onclick = async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    const share = document.getElementById("share");
    share.textContent = "link copied";
    setTimeout(() => { share.textContent = "share"; }, 2000);
  } catch {
    prompt("Copy this link to share the layout:", location.href);
  }
};

setupMark(document.getElementById("mark"));
