// The WebSocket to `/ws/{session_id}?token=<learner token>` (protocol v1, docs/protocol.md),
// reconnecting with exponential backoff under the same session id so the conversation
// carries on.

import { ensureToken, renewToken } from "./learner.js";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;
// A fresh credential refused this many times in a row: the server will not take any.
const MAX_REFUSED_CREDENTIALS = 3;

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_NOT_FOUND = 4404;
export const CLOSE_DELETED = 4410;

// Close codes after which retrying the same session cannot help, with what to tell the
// user (the page decides what to do next: 4404 and 4410 start a new session).
const FATAL = {
  1000: null,
  4400: "The session id was rejected by the server.",
  [CLOSE_NOT_FOUND]: "That session is not yours or no longer exists.",
  [CLOSE_DELETED]: "This session was deleted.",
};

export function wsUrl(sessionId, token, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${loc.host}/ws/${encodeURIComponent(sessionId)}${query}`;
}

/**
 * Events (all CustomEvent with `detail`):
 *   status  {state: "connecting"|"open"|"reconnecting"|"closed", attempt, delayMs, code, reason}
 *   message {type, ...}  a JSON message from the server
 *   audio   ArrayBuffer  a binary PCM16 frame
 *
 * "open" is reported on the server's first `ready`, not when the socket opens: a refused
 * credential or session is answered by an `error` and a close on an open socket.
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
    this.opening = false; // waiting for a credential before opening the socket
    this.connects = 0;
    this.refused = 0;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  async connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    if (this.opening) return;
    this.emit("status", { state: this.attempt ? "reconnecting" : "connecting", attempt: this.attempt });
    this.opening = true;
    let token;
    try {
      token = await ensureToken();
    } catch {
      token = null; // the server is unreachable: the socket below fails and backs off too
    } finally {
      this.opening = false;
    }
    if (this.stopped || this.ws) return;
    this.open(token);
  }

  open(token) {
    let ws;
    try {
      ws = new WebSocket(wsUrl(this.sessionId, token));
    } catch (err) {
      this.emit("status", { state: "closed", reason: `Cannot open a WebSocket: ${err}` });
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let ready = false;
    ws.onopen = () => {
      // Configure the session before anything else is sent (protocol: `start` first).
      ws.send(JSON.stringify(this.startMessage()));
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      if (typeof e.data !== "string") {
        this.emit("audio", e.data);
        return;
      }
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== "string") return;
      if (msg.type === "ready" && !ready) {
        ready = true;
        this.connects += 1;
        this.attempt = 0;
        this.refused = 0;
        this.emit("status", { state: "open", reconnected: this.connects > 1 });
      }
      this.emit("message", msg);
    };
    ws.onclose = (e) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) {
        this.emit("status", { state: "closed", reason: "" });
        return;
      }
      if (e.code === CLOSE_UNAUTHORIZED) {
        this.renewAndRetry(token);
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

  /** The credential was refused (expired, revoked, forgotten): get a new one, then retry. */
  async renewAndRetry(token) {
    this.refused += 1;
    if (this.refused > MAX_REFUSED_CREDENTIALS) {
      this.emit("status", {
        state: "closed",
        code: CLOSE_UNAUTHORIZED,
        reason: "The server refuses this browser's credentials. Reload the page to try again.",
      });
      return;
    }
    try {
      await renewToken(token);
    } catch {
      // unreachable: the retry below backs off and tries again
    }
    if (!this.stopped) this.scheduleReconnect(CLOSE_UNAUTHORIZED, "");
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
    if (this.ws || this.opening) return; // a connection attempt is in flight
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
