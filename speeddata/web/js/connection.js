// The WebSocket to the server: subscribe, receive frames, reconnect after a restart.

import { decodeFrame } from "./protocol.js";
import { SignalData } from "./store.js";

const CHANNELS_REFRESH_MS = 5000;

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
    this.retryMs = 250;
    this.framesReceived = 0;
    this.bytesReceived = 0;
    this.dropped = 0;
    this.lastError = "";
    this.open();
    // Rates, staleness and source clocks change: refresh the channel list now and then.
    setInterval(() => this.refreshChannels(), CHANNELS_REFRESH_MS);
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
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.retryMs = 250; };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = () => {
      this.setState("disconnected");
      setTimeout(() => this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 4000);
    };
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
