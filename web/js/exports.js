// Tags, pivot jobs and exported files: export a tag with one click, watch its progress,
// download or delete the file (HDF5, or a zip of CSV or Parquet files).

import { call } from "./mark.js";

const message = document.getElementById("message");

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "";
    tr.append(td);
  }
  return tr;
}

function button(label, onclick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.onclick = onclick;
  return b;
}

let watched = null;  // the id of the export this page started last

const mib = (bytes) => (bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} kB`
  : `${(bytes / 2 ** 20).toFixed(1)} MiB`);
const when = (ns) => new Date(ns / 1e6).toLocaleString();

async function showCaptured() {
  const view = await call("GET", "/api/captures");
  document.getElementById("captured-total").textContent =
    `${mib(view.bytes)} cached of ${view.quota ? mib(view.quota) : "a quota not fixed yet"}, ` +
    `growing ${(view.growth_bytes_per_s / 1000).toFixed(1)} kB/s: ${view.outlook}` +
    " (tags not yet exported are kept).";
  document.querySelector("#captured tbody").replaceChildren(
    ...Object.entries(view.channels).map(([name, c]) => row([
      name, mib(c.bytes), c.files, when(c.first_ns), when(c.last_ns),
      `${(c.growth_bytes_per_s / 1000).toFixed(1)} kB/s`])));
  return view.tags;
}

/** A tag's export state: a download link when its file is here, and the warning when
 * retention is about to reach its cached data (it is exported, so no longer kept). */
function exportState(tag, files) {
  const span = document.createElement("span");
  if (!tag.exported) {
    span.textContent = "no (kept by retention)";
    return span;
  }
  const file = files.find((e) => e.name.replace(/\.(h5|zip)$/, "") === tag.name);
  if (file) {
    const link = document.createElement("a");
    link.href = `/api/exports/${encodeURIComponent(file.name)}`;
    link.download = file.name;
    link.textContent = file.name;
    span.append(link, " ");
  }
  span.append(tag.exported);
  const reach = tag.retention_reaches_hours;
  if (tag.retention_warning) {  // said by the server (speeddata.captures), as the CLI says it
    const warn = document.createElement("strong");
    warn.className = "warning";
    warn.textContent = ` ⚠ retention reaches its cached data in about ${reach.toFixed(1)} h`;
    span.append(warn);
  }
  return span;
}

async function refresh() {
  try {
    const [tags, jobs, exports] = await Promise.all(
      [showCaptured(), call("GET", "/api/pivot"), call("GET", "/api/exports")]);
    document.querySelector("#tags tbody").replaceChildren(...tags.map((t) => row([
      t.name, t.start, t.end ?? "open", t.channels.join(", ") || "all", mib(t.bytes), t.note,
      exportState(t, exports),
      button("export", async () => {
        try {
          const format = document.getElementById("format").value;
          const job = await call("POST", "/api/pivot", { tag: t.name, force: true, format });
          watched = job.id;
          message.value = `exporting ${t.name}`;
          refresh();
        } catch (err) { message.value = `export failed: ${err.message}`; }
      }),
      button("delete", async () => {
        if (!confirm(`Delete tag ${t.name}? Its cached data is no longer kept from ` +
                     "retention; exported files stay.")) return;
        try {
          await call("DELETE", `/api/tags/${encodeURIComponent(t.name)}`);
          message.value = `deleted tag ${t.name}`;
          refresh();
        } catch (err) { message.value = `delete failed: ${err.message}`; }
      })])));
    document.querySelector("#jobs tbody").replaceChildren(...jobs.slice().reverse().map((j) => {
      const bar = document.createElement("progress");
      bar.max = j.total || 1;
      bar.value = j.state === "done" ? bar.max : j.done;
      const waiting = j.state === "queued" || j.state === "running";
      return row([j.name, j.error ? `failed: ${j.error}` : j.state, bar,
        j.seconds ? `${j.seconds} s` : "",
        waiting ? button("cancel", async () => {
          await call("DELETE", `/api/pivot/${j.id}`);
          refresh();
        }) : ""]);
    }));
    const mine = jobs.find((j) => j.id === watched);
    if (mine && !["queued", "running", "cancelling"].includes(mine.state)) {
      message.value = mine.state === "done" ? `exported ${mine.file}`
        : mine.state === "failed" ? `export failed: ${mine.error}` : `export ${mine.state}`;
      watched = null;
    }
    document.querySelector("#exports tbody").replaceChildren(...exports.map((e) => {
      const link = document.createElement("a");
      link.href = `/api/exports/${encodeURIComponent(e.name)}`;
      link.textContent = e.name;
      link.download = e.name;
      return row([link, `${(e.bytes / 2 ** 20).toFixed(2)} MiB`, e.modified,
        button("delete", async () => {
          await call("DELETE", `/api/exports/${encodeURIComponent(e.name)}`);
          refresh();
        })]);
    }));
    const busy = jobs.some((j) => j.state === "queued" || j.state === "running");
    setTimeout(refresh, busy ? 300 : 3000);
  } catch (err) {
    message.value = `server unreachable: ${err.message}`;
    setTimeout(refresh, 2000);
  }
}

refresh();
