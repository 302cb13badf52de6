// Entry point: the app first, then the custom elements (which register with it), then
// the controls in the header.

import { app, buildElement, layoutLink, loadLayoutFromUrl } from "./app.js";
import "./chart.js";
import { clock, fmt, useUtc, usingUtc } from "./chartmath.js";
import "./value.js";
import "./spectrum.js";  // a legend click opens a spectrum or an XY panel
import "./xy.js";
import { setupMark } from "./mark.js";

loadLayoutFromUrl();

const state = document.getElementById("state");
/** The connection pill: state, the group the server draws from, what this page lost;
 * disconnected, why (as the server said) and when it tries again (a click: now). */
function showState() {
  const conn = app.conn;
  let text = conn.state;
  const title = [];
  if (conn.state === "connected") {
    text += conn.source === "decimated" ? " · decimated" : " · every sample";
    if (conn.dropped) text += ` · ${conn.dropped} frame${conn.dropped === 1 ? "" : "s"} skipped`;
  } else if (conn.state === "disconnected") {
    if (conn.reason) text += ` · ${conn.reason}`;
    const wait = Math.ceil((conn.retryAt - Date.now()) / 1000);
    text += wait > 0 ? ` · retry in ${wait} s` : " · retrying";
    if (conn.reasonDetail) title.push(conn.reasonDetail);
    title.push("click to try again now");
  }
  if (conn.lastError) title.push(`last server error: ${conn.lastError}`);
  if (state.textContent !== text) state.textContent = text;
  state.className = `state ${conn.state}`;
  state.title = title.join("\n");
}
state.onclick = () => app.conn.retryNow();
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

/** A header badge: its text, and its detail (lines) as its tooltip, as its accessible
 * description and in the popover a click or Enter opens. */
function showBadge(badge, text, lines) {
  badge.textContent = text;
  badge.title = lines.join("\n");
  const detail = document.getElementById(badge.getAttribute("popovertarget"));
  const list = document.createElement("ul");
  for (const line of lines) list.append(Object.assign(document.createElement("li"), { textContent: line }));
  detail.replaceChildren(list);
}
for (const badge of document.querySelectorAll("header [popovertarget]")) {
  const detail = document.getElementById(badge.getAttribute("popovertarget"));
  detail.addEventListener("beforetoggle", (e) => {  // open just below its badge
    if (e.newState !== "open") return;
    const r = badge.getBoundingClientRect();
    detail.style.top = `${r.bottom + 4}px`;
    detail.style.left = `${Math.max(4, Math.min(r.left, innerWidth - 420))}px`;
  });
}

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
  showBadge(badge, `⚠ ${alarms.length} out of limits`, alarms.map((a) =>
    `${a.signal}: ${a.level}, ${fmt(a.value)} since ${clock(a.since_ms)}`));
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
  const summary = `⚠ ${lost} lost in 10 s (${(100 * lost / sent).toFixed(1)} %)`;
  // who reported it, and how far to believe it: the server says (trust, report_only)
  const doubt = (r) => (r.trust === "outside allow" ? " (reported from outside [relay] " +
    "allow: cannot be trusted)" : "") + (r.report_only ? " (reports only, no data)" : "");
  showBadge(lossBadge, summary, recent.map((r) => `${r.hop}: ${r.channel} reported by ` +
    `${r.source}: ${r.recent_lost} of ${r.recent_sent} in the last 10 s, ${r.lost} of ` +
    `${r.sent} since its first report${doubt(r)}`));
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

// A note at the bottom of the window (it moves nothing), read out once.
const toast = document.getElementById("toast");
function note(text) {
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(note.timer);
  note.timer = setTimeout(() => { toast.hidden = true; }, 8000);
}

// share: the layout, and the range each paused or zoomed chart shows, so the link opens
// the same view; a server with a token needs it from the receiver too (never in the link)
let tokenRequired = null;
document.getElementById("share").onclick = async () => {
  const link = layoutLink({ views: true });
  const paused = [...document.querySelectorAll("sd-chart")].filter((c) => c.paused).length;
  if (tokenRequired === null) {
    try {
      const status = await (await fetch("api/status")).json();
      tokenRequired = Boolean(status.services?.serve?.token_required);
    } catch { /* said as unknown below */ }
  }
  let text = paused ? `link copied: it opens this layout on the range${paused > 1 ? "s" : ""} ` +
    `the paused chart${paused > 1 ? "s" : ""} show${paused > 1 ? "" : "s"}` : "link copied: it opens this layout";
  if (tokenRequired) {
    text += ". This server needs its token: the receiver must have opened its token link " +
      "(speeddata status --url prints it) in that browser, as the link does not carry it.";
  } else if (tokenRequired === null) {
    text += ". If this server needs a token, the receiver needs it too.";
  }
  document.getElementById("share").dataset.link = link;  // read by the browser tests
  try {
    await navigator.clipboard.writeText(link);
    note(text);
  } catch {
    note(text.replace("link copied", "copy the link from the dialog"));
    prompt("Copy this link to share the layout:", link);
  }
};

setupMark(document.getElementById("mark"));
