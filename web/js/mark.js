// The mark control: start and stop a tag with one click (POST /api/tags), and the
// list of exports (issue: pivot jobs) when the server offers them. Times are shown in
// the zone the header shows (chartmath.clock); tag names stay in UTC, as the CLI's.

import { clock, dateLabel } from "./chartmath.js";

/** "17:30:00.000" (today) or "Nov 22 17:30:00.000": a tag's time (ns) as the page
 * shows times. */
const shown = (ns) => {
  const day = dateLabel(ns / 1e6);
  return day === dateLabel(Date.now()) ? clock(ns / 1e6) : `${day} ${clock(ns / 1e6)}`;
};

/** What a message says of a tag: its name and range, local, the whole in the tooltip. */
function say(out, prefix, tag) {
  const end = tag.end_ns === null || tag.end_ns === undefined ? "" : ` → ${clock(tag.end_ns / 1e6)}`;
  out.value = `${prefix} ${tag.name}: ${shown(tag.start_ns)}${end}`;
  out.title = `${tag.name}: ${tag.start} → ${tag.end || "open"} (UTC)`;
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(data && data.detail ? JSON.stringify(data.detail) : response.statusText);
  return data;
}

export function setupMark(root) {
  const name = root.querySelector("input");
  const button = root.querySelector("button");
  const message = root.querySelector("output");
  let open = null;
  const defaultName = () => `mark-${new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-")}`;
  name.placeholder = defaultName();
  button.onclick = async () => {
    try {
      if (open) {
        const tag = await call("POST", `/api/tags/${encodeURIComponent(open)}/stop`, {});
        say(message, "tag", tag);
        open = null;
        button.textContent = "start mark";
        root.classList.remove("recording");
        name.disabled = false;
        name.value = "";
        name.placeholder = defaultName();
      } else {
        const tag = await call("POST", "/api/tags", { name: name.value || name.placeholder, start: "now" });
        open = tag.name;
        say(message, "marking", tag);
        button.textContent = "stop mark";
        root.classList.add("recording");
        name.disabled = true;
      }
    } catch (err) {
      message.value = `mark failed: ${err.message}`;
    }
  };
}

/** Ask for a name and a note for [t0, t1] (ms) and make that tag, the same one
 * 'speeddata tag NAME --start T0 --end T1' makes. Resolves to the tag, or null. */
export function tagRange(t0, t1, channels) {
  const dialog = document.getElementById("tag-range");
  const form = dialog.querySelector("form");
  const out = dialog.querySelector("output");
  const iso = (ms) => new Date(ms).toISOString();
  dialog.querySelector(".range").textContent =
    `${dateLabel(t0)} ${clock(t0)} – ${clock(t1)} (${((t1 - t0) / 1000).toFixed(1)} s)`;
  form.elements.name.value = `range-${iso(t0).slice(0, 19).replace(/[-:]/g, "").replace("T", "-")}`;
  form.elements.note.value = "";
  out.value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    form.onsubmit = async (event) => {
      if (event.submitter && event.submitter.value === "cancel") { resolve(null); return; }
      event.preventDefault();  // stay open until the server said yes
      try {
        const tag = await call("POST", "/api/tags", {
          name: form.elements.name.value, start: iso(t0), end: iso(t1),
          note: form.elements.note.value,
          channels: form.elements.only.checked ? channels : [] });
        dialog.close();
        const message = document.querySelector("#mark output");
        if (message) say(message, "tag", tag);
        resolve(tag);
      } catch (err) {
        out.value = `not made: ${err.message}`;
      }
    };
    dialog.onclose = () => resolve(null);
  });
}

export { call };
