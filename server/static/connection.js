// The WebSocket to `/ws/{session_id}` (protocol v1, docs/protocol.md), reconnecting with
// exponential backoff under the same session id so the conversation carries on.

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;

// Close codes after which retrying cannot help, with what to tell the user.
const FATAL = {
  1000: null,
  4400: "The session id was rejected by the server.",
};

export function wsUrl(sessionId, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/${encodeURIComponent(sessionId)}`;
}

/**
 * Events (all CustomEvent with `detail`):
 *   status  {state: "connecting"|"open"|"reconnecting"|"closed", attempt, delayMs, reason}
 *   message {type, ...}  a JSON message from the server
 *   audio   ArrayBuffer  a binary PCM16 frame
 */
export class Connection extends EventTarget {
  constructor(sessionId, startMessage) {
    super();
    this.sessionId = sessionId;
    this.startMessage = startMessage;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    this.connects = 0;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    this.emit("status", { state: this.attempt ? "reconnecting" : "connecting", attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(wsUrl(this.sessionId));
    } catch (err) {
      this.emit("status", { state: "closed", reason: `Cannot open a WebSocket: ${err}` });
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.connects += 1;
      this.attempt = 0;
      // Configure the session before anything else is sent (protocol: `start` first).
      ws.send(JSON.stringify(this.startMessage()));
      this.emit("status", { state: "open", reconnected: this.connects > 1 });
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string") {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;
        }
        if (msg && typeof msg.type === "string") this.emit("message", msg);
      } else {
        this.emit("audio", e.data);
      }
    };
    ws.onclose = (e) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) {
        this.emit("status", { state: "closed", reason: "" });
        return;
      }
      if (e.code in FATAL) {
        const reason = FATAL[e.code];
        this.emit("status", { state: "closed", code: e.code, reason: reason || "" });
        return;
      }
      this.scheduleReconnect(e.code, e.reason);
    };
    // Errors are always followed by close; the close handler decides what happens.
    ws.onerror = () => {};
  }

  scheduleReconnect(code, reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delayMs = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.emit("status", {
      state: "reconnecting",
      attempt: this.attempt,
      delayMs,
      code,
      reason: reason || "",
    });
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  /** Reconnect now (e.g. the user pressed "retry" or the network came back). */
  retryNow() {
    if (this.isOpen || this.stopped) return;
    clearTimeout(this.timer);
    if (this.ws) return; // a connection attempt is in flight
    this.connect();
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  sendAudio(buffer) {
    if (!this.isOpen) return false;
    // Drop audio rather than queue it without bound when the network stalls.
    if (this.ws.bufferedAmount > 256 * 1024) return false;
    this.ws.send(buffer);
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000, "bye");
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
