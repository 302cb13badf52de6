// The front end of speeddata.notebook's widgets (anywidget): the page's own modules
// (chart.js, chartmath.js, store.js, protocol.js, connection.js, as this speeddata has
// them) loaded into the notebook's page, one copy per widget, with the kernel as their
// network. Not a module of the stripchart page: the page never imports it.
//
// The modules are asked from the kernel as text and loaded as blob: modules, their
// "./x.js" imports pointed at each other's blobs. Three changes, all at load time:
//  - each module gets `fetch` and `WebSocket` imported from this widget's kernel
//    network, which shadow the browser's: the WebSocket to /ws and the GETs of the
//    read-only API go through the kernel, which holds the token (never this page);
//  - app.js (the page's single connection, its layout in the URL) is replaced by a
//    widget's app with the same members, and mark.js (tagging) by a note;
//  - customElements.define("sd-chart", ...) defines "sd-chart-<widget>" instead, so
//    several widgets (several copies of the class) share a document; the stylesheet's
//    rules name that element, inside the widget's shadow root.

let count = 0;
const hosts = (globalThis.__speeddataWidgets ||= {});

/** A blob: URL for a module's text. */
const blobUrl = (text, type = "text/javascript") =>
  URL.createObjectURL(new Blob([text], { type }));

/** The kernel as the network of one widget's modules. */
class KernelNet {
  constructor(model) {
    this.model = model;
    this.pending = new Map();  // fetch id -> [resolve, reject]
    this.fetchId = 0;
    this.socketId = 0;
    this.socket = null;
    this.closed = false;
    this.waiting = null;  // [resolve] of the modules asked for
    this.listener = (msg, buffers) => this.receive(msg, buffers);
    model.on("msg:custom", this.listener);
    const net = this;
    /** A WebSocket whose far end is the kernel's WebSocket to the server. */
    this.WebSocket = class KernelSocket {
      static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.binaryType = "arraybuffer";
        this.onopen = this.onmessage = this.onclose = null;
        this.n = ++net.socketId;
        if (net.closed) return;  // the widget is gone: this one never opens
        net.socket = this;
        net.model.send({ op: "ws-open", n: this.n });
      }
      send(text) {
        if (this.readyState !== 1) throw new DOMException("not open", "InvalidStateError");
        net.model.send({ op: "ws-send", data: String(text) });
      }
      close() {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        if (net.socket === this) { net.socket = null; net.model.send({ op: "ws-close" }); }
        setTimeout(() => this.onclose?.({ code: 1005, reason: "" }), 0);
      }
    };
    this.fetch = (input, init = {}) => this.get(String(input), init);
  }

  /** The page's modules and stylesheet, by name. */
  modules() {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.model.send({ op: "modules" });
    });
  }

  get(path, init) {
    if (this.closed) return Promise.reject(new TypeError("Failed to fetch: widget closed"));
    if ((init.method || "GET").toUpperCase() !== "GET") {
      return Promise.reject(new TypeError("the notebook widget makes no changes on the server"));
    }
    const id = ++this.fetchId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, [resolve, reject]);
      init.signal?.addEventListener("abort", () => {
        this.pending.delete(id);
        reject(init.signal.reason);
      });
      this.model.send({ op: "fetch", id, path });
    });
  }

  receive(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.op === "modules") { this.waiting?.(msg.modules); this.waiting = null; return; }
    if (msg.op === "fetch") {
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      if (msg.error !== undefined) waiter[1](new TypeError(`Failed to fetch: ${msg.error}`));
      else waiter[0](new Response(msg.body, { status: msg.status,
                                              headers: { "content-type": msg.type || "" } }));
      return;
    }
    const ws = this.socket;
    if (!ws || msg.n !== ws.n) return;  // a socket given up meanwhile
    if (msg.op === "ws-open") { ws.readyState = 1; ws.onopen?.({}); }
    else if (msg.op === "ws-text") ws.onmessage?.({ data: msg.data });
    else if (msg.op === "ws-binary") {
      const v = buffers[0];  // a DataView: the frame's own ArrayBuffer, from offset 0
      ws.onmessage?.({ data: v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength) });
    } else if (msg.op === "ws-close") {
      ws.readyState = 3;
      this.socket = null;
      ws.onclose?.({ code: msg.code, reason: msg.reason || "" });
    }
  }

  close() {
    this.closed = true;
    this.model.off("msg:custom", this.listener);
    if (this.socket) { this.socket.readyState = 3; this.socket = null; }
    this.model.send({ op: "ws-close" });
    for (const [, reject] of this.pending.values()) reject(new TypeError("widget closed"));
    this.pending.clear();
  }
}

/** The widget's replacement of app.js: what chart.js uses of the page's app (conn,
 * register, unregister, layoutChanged, one redraw per animation frame, stats). */
const appModule = (id) => `
import { Connection } from "./connection.js";
const host = globalThis.__speeddataWidgets[${JSON.stringify(id)}];
const RING = 2000;
const push = (ring, v) => { ring.push(v); if (ring.length > RING) ring.splice(0, ring.length - RING); };
class App {
  constructor() {
    this.conn = new Connection("ws://kernel/ws");
    this.elements = new Set();
    this.pendingLayout = false;
    this.stats = { frames: 0, frameMs: [], intervalMs: [] };
    this.lastFrame = 0;
    this.stopped = false;
    requestAnimationFrame((t) => this.frame(t));
  }
  register(el) { this.elements.add(el); this.layoutChanged(); }
  unregister(el) { this.elements.delete(el); this.layoutChanged(); }
  layoutChanged() {
    if (this.pendingLayout) return;
    this.pendingLayout = true;
    queueMicrotask(() => {
      this.pendingLayout = false;
      const signals = [], windows = [60];
      for (const el of this.elements) { signals.push(...el.signals); windows.push(el.windowSeconds); }
      this.conn.subscribe(signals, Math.max(...windows));
    });
  }
  frame(t) {
    if (this.stopped) return;
    requestAnimationFrame((next) => this.frame(next));
    const start = performance.now();
    const now = this.conn.now();
    for (const el of this.elements) el.draw(now);
    this.stats.frames++;
    push(this.stats.frameMs, performance.now() - start);
    if (this.lastFrame) push(this.stats.intervalMs, t - this.lastFrame);
    this.lastFrame = t;
  }
}
export const app = new App();
host.app = app;
`;

const markModule = `
// tagging a range (shift-drag) is the page's: the notebook widget makes no changes
export async function tagRange() {}
`;

/** Blob URLs of the page's modules for one widget, imports pointed at each other. */
function loadModules(sources, id) {
  const host = hosts[id];
  const net = blobUrl(`const n = globalThis.__speeddataWidgets[${JSON.stringify(id)}].net;
export const fetch = n.fetch;
export const WebSocket = n.WebSocket;`);
  const texts = { ...sources, "app.js": appModule(id), "mark.js": markModule };
  const urls = {}, loading = new Set();
  const load = (name) => {
    if (urls[name]) return urls[name];
    if (texts[name] === undefined) throw new Error(`the page has no module ${name}`);
    if (loading.has(name)) throw new Error(`the page's modules import each other: ${name}`);
    loading.add(name);
    const text = texts[name]
      .replace(/((?:from|import)\s*)(["'])\.\/([\w.-]+\.js)\2/g,
               (_, lead, quote, dep) => `${lead}${quote}${load(dep)}${quote}`)
      .replace(/customElements\.define\(\s*(["'])([a-z0-9-]+)\1\s*,/g,
               (_, quote, tag) => `globalThis.__speeddataWidgets[${JSON.stringify(id)}].define(${JSON.stringify(tag)},`);
    urls[name] = blobUrl(`import { fetch, WebSocket } from "${net}";\n${text}`);
    return urls[name];
  };
  host.define = (tag, cls) => {
    const name = `${tag}-${id}`;
    customElements.define(name, cls);
    host.tags[tag] = name;
  };
  return load;
}

/** What the status line says: the connection as the page's pill does, unknown
 * signals, the server's last error. [text, isError] */
function describe(conn, signals, started) {
  if (conn.state === "connected") {
    const known = conn.channels.length > 0;
    const unknown = known ? signals.filter((s) => !conn.describe(s)) : [];
    if (unknown.length) {
      return [`unknown signal${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")} ` +
        `(this server has the channels ${conn.channels.map((c) => c.name).join(", ")})`, true];
    }
    if (conn.lastError) return [`server: ${conn.lastError}`, true];
    return [`connected · ${conn.source === "decimated" ? "decimated" : "every sample"}` +
      (conn.dropped ? ` · ${conn.dropped} frames skipped` : ""), false];
  }
  if (conn.state === "disconnected") {
    const wait = Math.ceil((conn.retryAt - Date.now()) / 1000);
    const why = conn.reason === "token needed"
      ? "token needed: this server needs its token (give token=..., or run the notebook " +
        "where 'speeddata status --url' finds it)"
      : conn.reason || "connection lost";
    return [`disconnected · ${why}${conn.reasonDetail && conn.reasonDetail !== conn.reason &&
      conn.reason !== "token needed" ? ` (${conn.reasonDetail})` : ""} · ` +
      (wait > 0 ? `retry in ${wait} s` : "retrying"), true];
  }
  return [Date.now() - started > 5000 ? "connecting… (no answer yet)" : "connecting…", false];
}

const WIDGET_CSS = `
:host { display: block; font: 13px system-ui, sans-serif; color: var(--fg); }
.status { font-size: 12px; padding: 2px 4px; color: #2a8a3a; }
.status.error { color: #b3261e; font-weight: 600; }
.chart-remove { display: none; }  /* the cell's output is the chart's place */
`;

export default {
  async render({ model, el }) {
    const id = `w${++count}${Math.random().toString(36).slice(2, 8)}`;
    const root = document.createElement("div");
    root.className = "speeddata-widget";
    el.append(root);
    const shadow = root.attachShadow({ mode: "open" });
    const status = Object.assign(document.createElement("div"), { className: "status",
                                                                  textContent: "loading…" });
    shadow.append(status);
    const say = (text, error) => {
      if (status.textContent !== text) status.textContent = text;
      status.classList.toggle("error", error);
      root.dataset.state = error ? "error" : "ok";
      root.dataset.status = text;
    };
    const net = new KernelNet(model);
    const host = hosts[id] = { net, tags: {}, app: null };
    root.speeddata = host;  // for the tests and the curious: host.app.stats, host.chart
    let timer = 0;
    const started = Date.now();
    try {
      const sources = await net.modules();
      const load = loadModules(sources, id);
      const { SdChart } = await import(load("chart.js"));
      if (!SdChart) throw new Error("chart.js exports no SdChart");
      const tag = host.tags["sd-chart"];
      if (!tag) throw new Error("chart.js defines no sd-chart element");
      const style = document.createElement("style");
      style.textContent = sources["style.css"].replace(/:root/g, ":host")
        .replace(/\bsd-chart(?![\w-])/g, tag) + WIDGET_CSS +
        `.chart-body { min-height: ${model.get("height")}px; }`;
      shadow.prepend(style);
      const chart = document.createElement(tag);
      const signals = model.get("signals");
      chart.setAttribute("signals", signals.join(" "));
      chart.setAttribute("window", String(model.get("seconds")));
      if (model.get("title")) chart.setAttribute("title", model.get("title"));
      const view = model.get("view");
      if (view.length === 2) chart.setAttribute("view", `${view[0]} ${view[1]}`);
      chart.style.minHeight = `${model.get("height") + 70}px`;
      const body = document.createElement("div");
      body.style.cssText = "display: flex; padding: 2px";
      body.append(chart);
      shadow.append(body);
      host.chart = chart;
      const show = () => say(...describe(host.app.conn, signals, started));
      host.app.conn.addEventListener("state", show);
      host.app.conn.addEventListener("servererror", show);
      timer = setInterval(show, 500);
      show();
    } catch (err) {
      say(`speeddata widget: ${err.message || err}`, true);
      console.error("speeddata widget", err);
    }
    return () => {
      clearInterval(timer);
      if (host.app) {
        host.app.stopped = true;
        host.app.conn.close();  // its channel refresh and reconnection timers too
      }
      net.close();
      delete hosts[id];
    };
  },
};
