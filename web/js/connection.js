// The WebSocket to the server: subscribe, receive frames, reconnect after a restart,
// backing off while it keeps failing, and say why it failed.

import { decodeFrame } from "./protocol.js";
import { SignalData } from "./store.js";

const CHANNELS_REFRESH_MS = 5000;
const RETRY_FIRST_MS = 250;
const RETRY_MOST_MS = 30000;

/** The wait before reconnection attempt ``failures`` (1: right after a connection was
 * lost): doubling from 250 ms up to 30 s, each up to a quarter longer at random, so that
 * the pages of a restarted server do not all come back in the same millisecond. */
export function retryDelay(failures, random = Math.random()) {
  const base = Math.min(RETRY_FIRST_MS * 2 ** Math.max(0, failures - 1), RETRY_MOST_MS);
  return Math.min(RETRY_MOST_MS, Math.round(base * (1 + 0.25 * random)));
}

export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    /** @type {Map<string, SignalData>} */
    this.data = new Map();
    /** @type {any[]} */
    this.channels = [];
    this.levels = [{ width_ms: 10, span_s: 60 }, { width_ms: 250, span_s: 600 }];
    this.state = "connecting";
    this.offsetMs = 0; // server clock minus page clock
    this.wanted = { signals: [], window: 60 };
    this.failures = 0;  // attempts in a row that ended before the server said hello
    this.retryMs = 0;  // the wait before the next attempt, while disconnected
    this.retryAt = 0;  // when it is (Date.now())
    this.reason = "";  // why the last attempt ended, when known ("token needed", ...)
    this.reasonDetail = "";
    this.framesReceived = 0;
    this.bytesReceived = 0;
    this.dropped = 0;
    this.lastError = "";
    this.closed = false;
    this.open();
    // Rates, staleness and source clocks change: refresh the channel list now and then.
    this.refreshTimer = setInterval(() => this.refreshChannels(), CHANNELS_REFRESH_MS);
  }

  /** For good (a notebook widget's cell cleared or re-run): the socket closed, the
   * channel refresh and any reconnection stopped, so nothing of it runs on. */
  close() {
    this.closed = true;
    clearInterval(this.refreshTimer);
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }

  async refreshChannels() {
    if (this.state !== "connected") return;
    try {
      const response = await fetch("/api/channels");
      if (!response.ok) return;
      this.channels = (await response.json()).channels;
      this.dispatchEvent(new CustomEvent("channels", { detail: this.channels }));
    } catch (error) {
      // the WebSocket's own reconnection reports a server that went away
    }
  }

  now() { return Date.now() + this.offsetMs; }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  open() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = async (event) => {
      if (this.ws !== ws) return;
      this.failures++;
      this.retryMs = retryDelay(this.failures);
      this.retryAt = Date.now() + this.retryMs;
      this.retryTimer = setTimeout(() => this.open(), this.retryMs);
      if (event.reason) this.reason = this.reasonDetail = event.reason;  // else the last one
      this.setState("disconnected");
      // A refused handshake reaches the page as code 1006 with no reason (the browser
      // keeps the HTTP answer to itself), a policy close (1008: no token) with a short
      // one: an HTTP request to the server gets the whole of it.
      if (event.code !== 1008 && (event.reason || opened)) return;
      const [reason, detail] = await refusal();
      if (this.ws !== ws) return;  // tried again meanwhile
      this.reason = reason;
      this.reasonDetail = detail;
      this.setState("disconnected");
    };
  }

  /** Try again now (the connection pill's click), not when the back-off says. */
  retryNow() {
    if (this.state === "connected" || !this.retryTimer) return;
    this.open();
  }

  onMessage(data) {
    if (typeof data === "string") {
      const message = JSON.parse(data);
      if (message.type === "hello") {
        this.offsetMs = message.server_ms - Date.now();
        this.source = message.source; // "full": every sample; "decimated": a share
        this.channels = message.channels;
        this.levels = message.levels;
        this.data.clear(); // a restarted server sends its history again
        this.failures = 0;
        this.reason = this.reasonDetail = "";
        this.setState("connected");
        this.dispatchEvent(new CustomEvent("channels", { detail: message.channels }));
        this.sendSubscription();
      } else if (message.type === "error") {
        this.lastError = message.message;
        console.warn("speeddata server:", message.message);
        this.dispatchEvent(new CustomEvent("servererror", { detail: message }));
      }
      return;
    }
    this.framesReceived++;
    this.bytesReceived += data.byteLength;
    const frame = decodeFrame(data);
    this.dropped = frame.header.dropped;
    for (const s of frame.series) this.signal(s.signal).ingest(s.level, s.buckets);
    for (const [name, values] of Object.entries(frame.header.text)) {
      this.signal(name).ingestText(values);
    }
    this.dispatchEvent(new Event("data"));
  }

  signal(name) {
    let d = this.data.get(name);
    if (!d) { d = new SignalData(this.levels); this.data.set(name, d); }
    return d;
  }

  /** Describe a signal id ("channel.signal") from the server's channel list. */
  describe(id) {
    for (const c of this.channels) {
      for (const s of c.signals) if (s.id === id) return { ...s, channel: c };
    }
    return null;
  }

  subscribe(signals, window) {
    this.wanted = { signals: [...new Set(signals)], window };
    this.sendSubscription();
  }

  sendSubscription() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "subscribe", ...this.wanted }));
    }
  }
}

/** Why the server refuses this page, from an HTTP request: [reason, detail], or
 * ["unreachable", ...] when nothing answers, or ["", ""] when it answers fine. */
async function refusal() {
  try {
    const answer = await fetch("api/alarms", { cache: "no-store" });
    if (answer.ok) return ["", ""];
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch { /* not JSON */ }
    if (answer.status === 401) return ["token needed", detail];
    return [`refused (${answer.status})`, String(detail)];
  } catch {
    return ["server unreachable", "no answer from the server"];
  }
}
