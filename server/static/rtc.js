// WebRTC to the server (`POST /api/webrtc/offer`, docs/web-client.md#webrtc): the
// microphone goes out as Opus on an audio track, the agent's voice comes back on one and
// plays through an <audio> element (so the browser's echo canceller hears it), and the
// protocol v1 JSON messages travel on a data channel named "control".
//
// Same events and methods as connection.js's WebSocket `Connection`, so the page drives
// either. When WebRTC cannot be set up here (no answer, ICE failure, the data channel not
// open within a few seconds) it reports `{state: "fallback"}` and the page switches to
// the WebSocket; once a connection has worked, a drop is retried like the WebSocket's.

import { ensureToken, renewToken, RENEW_CODES } from "./learner.js";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;
const GATHER_TIMEOUT_MS = 3000; // non-trickle: wait this long for our candidates at most
const OPEN_TIMEOUT_MS = 6000; // the answer applied, the data channel must open by then
const MAX_REFUSED_CREDENTIALS = 3;
const ICE_KEY = "lva.iceServers";
const QUIET_AFTER_END_MS = 300; // the reply's tail still in the jitter buffer

const FATAL = {
  1000: null,
  4400: "The session id was rejected by the server.",
  4404: "That session is not yours or no longer exists.",
  4410: "This session was deleted.",
};
const STATUS_CODES = { 400: 4400, 401: 4401, 404: 4404, 429: 4429, 503: 4503 };

function cachedIceServers() {
  try {
    const servers = JSON.parse(sessionStorage.getItem(ICE_KEY) || "[]");
    return Array.isArray(servers) ? servers : [];
  } catch {
    return [];
  }
}

function cacheIceServers(servers) {
  try {
    sessionStorage.setItem(ICE_KEY, JSON.stringify(servers || []));
  } catch {
    // storage disabled: the next connection gathers without them
  }
}

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * The agent's voice from the remote track. `playing` follows `audio_start` .. the end of
 * the sound after `audio_end`; `stop()` mutes it at once (barge-in) until the next turn.
 * `stats.played` counts 50 ms stretches that were audible.
 */
export class RtcPlayer {
  constructor(ctx, onPlaying) {
    this.ctx = ctx;
    this.onPlaying = onPlaying;
    this.element = new Audio();
    this.element.autoplay = true;
    this.analyser = null;
    this.sink = null;
    this.turnId = null;
    this.stoppedTurn = null;
    this.ended = false;
    this.quietSince = 0;
    this.active = false;
    this.stats = { received: 0, scheduled: 0, played: 0, dropped: 0, underruns: 0 };
    this.buf = new Float32Array(1024);
    this.timer = setInterval(() => this.tick(), 50);
  }

  get playing() {
    return this.active;
  }

  attach(stream) {
    this.element.srcObject = stream;
    this.element.play().catch(() => {}); // before a gesture: the page resumes on the first one
    // Levels, for `playing` and the tests: a silent branch of the graph (Chromium feeds a
    // remote stream into Web Audio only while a media element plays it too).
    try {
      const source = this.ctx.createMediaStreamSource(stream);
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 1024;
      this.sink = this.ctx.createGain();
      this.sink.gain.value = 0;
      source.connect(this.analyser).connect(this.sink).connect(this.ctx.destination);
    } catch {
      this.analyser = null;
    }
  }

  level() {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.buf);
    let peak = 0;
    for (const v of this.buf) peak = Math.max(peak, Math.abs(v));
    return peak;
  }

  tick() {
    const loud = !this.element.muted && this.level() > 0.02;
    if (loud) {
      this.stats.played += 1;
      this.quietSince = 0;
    } else if (!this.quietSince) {
      this.quietSince = performance.now();
    }
    if (this.active && this.ended && this.quietSince && performance.now() - this.quietSince > QUIET_AFTER_END_MS) {
      this.active = false;
      this.onPlaying(false);
    }
  }

  begin(turnId) {
    this.turnId = turnId;
    this.ended = false;
    this.stats.received += 1;
    if (turnId === this.stoppedTurn) return;
    this.element.muted = false;
    if (!this.active) {
      this.active = true;
      this.onPlaying(true);
    }
  }

  end(turnId) {
    if (turnId === this.turnId) this.ended = true;
  }

  stop() {
    const cut = this.active ? 1 : 0;
    this.element.muted = true; // what is still in the jitter buffer is not heard
    this.stoppedTurn = this.turnId;
    if (this.active) {
      this.active = false;
      this.onPlaying(false);
    }
    return cut;
  }

  close() {
    clearInterval(this.timer);
    this.element.srcObject = null;
    if (this.sink) this.sink.disconnect();
  }
}

export class RtcConnection extends EventTarget {
  /** @param {() => object} startMessage  @param {RtcPlayer} player  @param {boolean} forced */
  constructor(sessionId, startMessage, player, forced = false) {
    super();
    this.sessionId = sessionId;
    this.startMessage = startMessage;
    this.player = player;
    this.forced = forced; // ?transport=webrtc: never fall back
    this.pc = null;
    this.channel = null;
    this.micTrack = null;
    this.sending = false;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    this.opening = false;
    this.connects = 0;
    this.refused = 0;
    this.kind = "webrtc";
  }

  get isOpen() {
    return this.channel !== null && this.channel.readyState === "open";
  }

  /** The microphone's stream: sent while `setSending(true)` (push-to-talk: while held).
   * A clone of its track is sent, so that muting it leaves the page's own level meter
   * (and the WebSocket path's capture) hearing the microphone. null: the mic stopped. */
  useMic(stream) {
    const track = stream ? stream.getAudioTracks()[0] || null : null;
    if (this.micTrack) this.micTrack.stop();
    this.micTrack = track ? track.clone() : null;
    if (this.micTrack) this.micTrack.enabled = this.sending;
    this.attachMic();
  }

  attachMic() {
    if (!this.pc) return;
    const sender = this.pc.getSenders().find((s) => !s.track || s.track.kind === "audio");
    if (sender && sender.track !== this.micTrack) sender.replaceTrack(this.micTrack).catch(() => {});
  }

  setSending(on) {
    this.sending = on;
    if (this.micTrack) this.micTrack.enabled = on;
  }

  /** Audio goes on the track; this says whether the frame the page has just read is being
   * sent (the page counts them like the WebSocket's frames). */
  sendAudio() {
    return this.isOpen && this.sending && this.micTrack !== null;
  }

  async connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    if (this.opening || this.pc) return;
    this.emit("status", { state: this.attempt ? "reconnecting" : "connecting", attempt: this.attempt });
    this.opening = true;
    let token;
    try {
      token = await ensureToken();
    } catch {
      token = null;
    }
    try {
      if (!this.stopped) await this.open(token, cachedIceServers());
    } finally {
      this.opening = false;
    }
  }

  async open(token, iceServers) {
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    pc.addTransceiver("audio", { direction: "sendrecv" });
    this.attachMic();
    const channel = pc.createDataChannel("control");
    pc.ontrack = (e) => this.player.attach(e.streams[0] || new MediaStream([e.track]));
    let answer;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, GATHER_TIMEOUT_MS);
      const body = {
        type: "offer",
        sdp: pc.localDescription.sdp,
        session_id: this.sessionId,
        mode: this.startMessage().mode,
      };
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      const res = await fetch("/api/webrtc/offer", { method: "POST", headers, body: JSON.stringify(body) });
      answer = await res.json().catch(() => ({}));
      if (this.pc !== pc) return;
      if (!res.ok) {
        this.teardown();
        this.refusedOffer(res.status, answer.error || {}, token);
        return;
      }
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    } catch (err) {
      if (this.pc !== pc) return;
      this.teardown();
      this.failed(`the offer could not be made or answered (${err})`, null);
      return;
    }
    const servers = Array.isArray(answer.ice_servers) ? answer.ice_servers : [];
    const newServers = JSON.stringify(servers) !== JSON.stringify(iceServers);
    cacheIceServers(servers);
    this.wire(pc, channel, token, newServers ? servers : null);
  }

  /** Events of an answered connection; `retryWith`: ICE servers to try once on failure. */
  wire(pc, channel, token, retryWith) {
    let ready = false;
    const giveUp = (why) => {
      if (this.pc !== pc) return;
      this.teardown();
      if (ready) this.scheduleReconnect(1006, why);
      else if (retryWith) this.open(token, retryWith);
      else this.failed(why, null);
    };
    const opening = setTimeout(() => giveUp("the data channel did not open"), OPEN_TIMEOUT_MS);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") giveUp("the connection failed (ICE or DTLS)");
    };
    channel.onopen = () => {
      if (this.pc !== pc) return;
      this.channel = channel;
      clearTimeout(opening);
      channel.send(JSON.stringify(this.startMessage()));
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    };
    channel.onclose = () => {
      clearTimeout(opening);
      if (this.pc !== pc) return;
      this.teardown();
      if (this.stopped) this.emit("status", { state: "closed", reason: "" });
      else if (ready) this.scheduleReconnect(1006, "");
      else this.failed("the data channel closed", null);
    };
    channel.onmessage = (e) => {
      if (this.pc !== pc || typeof e.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== "string") return;
      if (msg.type === "ping") {
        this.send({ type: "pong" });
        return;
      }
      if (msg.type === "close") {
        this.closedByServer(msg.code, msg.reason || "");
        return;
      }
      if (msg.type === "ready" && !ready) {
        ready = true;
        this.connects += 1;
        this.attempt = 0;
        this.refused = 0;
        this.emit("status", { state: "open", reconnected: this.connects > 1, transport: "webrtc" });
      }
      this.emit("message", msg);
    };
  }

  refusedOffer(status, error, token) {
    const code = STATUS_CODES[status];
    if (status === 401 && RENEW_CODES.has(error.code)) {
      this.renewAndRetry(token);
    } else if (code === 4404 || code === 4400) {
      this.emit("status", { state: "closed", code, reason: FATAL[code] });
    } else if (code === 4503 || code === 4429) {
      this.scheduleReconnect(code, error.message || "");
    } else {
      this.failed(`the server did not answer the offer (${status} ${error.code || ""})`, code || null);
    }
  }

  closedByServer(code, reason) {
    this.teardown();
    if (code in FATAL) {
      this.emit("status", { state: "closed", code, reason: FATAL[code] || "" });
    } else if (code === 4401) {
      this.renewAndRetry(null);
    } else {
      this.scheduleReconnect(code, reason);
    }
  }

  /** WebRTC does not work here: let the page fall back to the WebSocket (unless forced). */
  failed(reason, code) {
    if (this.forced) {
      this.scheduleReconnect(code || 1006, reason);
      return;
    }
    this.stopped = true;
    this.emit("status", { state: "fallback", reason });
  }

  async renewAndRetry(token) {
    this.refused += 1;
    if (this.refused > MAX_REFUSED_CREDENTIALS) {
      this.emit("status", {
        state: "closed",
        code: 4401,
        reason: "The server refuses this browser's credentials. Reload the page to try again.",
      });
      return;
    }
    try {
      await renewToken(token);
    } catch {
      // unreachable: the retry backs off
    }
    if (!this.stopped) this.scheduleReconnect(4401, "");
  }

  scheduleReconnect(code, reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delayMs = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.emit("status", { state: "reconnecting", attempt: this.attempt, delayMs, code, reason: reason || "" });
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  retryNow() {
    if (this.isOpen || this.stopped) return;
    clearTimeout(this.timer);
    if (this.pc || this.opening) return;
    this.connect();
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.channel.send(JSON.stringify(obj));
    return true;
  }

  teardown() {
    clearInterval(this.pinger);
    const pc = this.pc;
    this.pc = null;
    this.channel = null;
    if (pc) pc.close();
  }

  /** Closing the peer connection ends the server's session (as a WebSocket close does). */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.teardown();
    if (this.micTrack) this.micTrack.stop();
    this.micTrack = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
