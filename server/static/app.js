// The page: wires the connection, microphone, player, conversation log, and the search
// and history views.

import { apiError, apiFetch } from "./api.js";
import { MicCapture } from "./capture.js";
import { CLOSE_DELETED, CLOSE_NOT_FOUND, CLOSE_UNAUTHORIZED, Connection } from "./connection.js";
import { ConversationLog } from "./convo.js";
import { download } from "./download.js";
import { HistoryView } from "./history.js";
import { hooks, syncHooks } from "./hooks.js";
import { dropToken, ensureToken, onLearnerChange, saveToken } from "./learner.js";
import { Notices } from "./notices.js";
import { ReplyPlayer } from "./player.js";
import { RtcConnection, RtcPlayer } from "./rtc.js";
import { SearchView } from "./search.js";
import { hasStoredSessionId, newSessionId, saveSessionId, storedSessionId } from "./session.js";

const $ = (id) => document.getElementById(id);
const OUTPUT_RATE = 24000;
const MODE_KEY = "lva.mode";
const LOUD_DB = -45; // a frame this loud counts as sound for `micLoudAt`

const ui = {
  conn: $("conn"),
  talk: $("talk"),
  talkLabel: $("talk-label"),
  hint: $("talk-hint"),
  meter: $("meter"),
  meterFill: $("meter-fill"),
  vad: $("vad"),
  agent: $("agent-state"),
  sessionId: $("session-id"),
  exportSession: $("export-session"),
};

const notices = new Notices($("notices"));
const log = new ConversationLog($("log"), $("live"), $("empty"));
const ctx = new AudioContext({ latencyHint: "interactive" });
function onPlaying(playing) {
  hooks.playing = playing;
  ui.agent.dataset.on = String(playing);
  ui.agent.textContent = playing ? "Agent speaking" : "Agent idle";
  syncHooks();
}
const wsPlayer = new ReplyPlayer(ctx, onPlaying);
let rtcPlayer = null; // made with the first WebRTC connection
// The transport (docs/web-client.md#transport): WebRTC where the browser has it, else
// the WebSocket; `?transport=ws` or `?transport=webrtc` forces one. A WebRTC connection
// that cannot be set up falls back to the WebSocket for the rest of the page's life.
const forcedTransport = new URLSearchParams(location.search).get("transport");
let useRtc =
  forcedTransport === "webrtc" || (forcedTransport !== "ws" && typeof RTCPeerConnection === "function");
/** The player of the current connection's audio. */
const player = {
  get current() {
    return conn && conn.kind === "webrtc" ? rtcPlayer : wsPlayer;
  },
  get stats() {
    return this.current.stats;
  },
  get playing() {
    return this.current.playing;
  },
  begin: (turnId, rate) => player.current.begin(turnId, rate),
  end: (turnId) => player.current.end && player.current.end(turnId),
  push: (data) => wsPlayer.push(data),
  stop: () => player.current.stop(),
  // Over WebRTC the server ducks and pauses its own track: the RtcPlayer has nothing to do.
  duck: (turnId, gainDb) => player.current.duck && player.current.duck(turnId, gainDb),
  pause: (turnId) => player.current.pause && player.current.pause(turnId),
  resume: (turnId) => player.current.resume && player.current.resume(turnId),
};

const restored = hasStoredSessionId(); // a reload: the session may have a past to show
let sessionId = storedSessionId();
let forgetting = false;
let mode = localStorage.getItem(MODE_KEY) === "continuous" ? "continuous" : "push_to_talk";
let talking = false;
let micOpening = null;
const mic = new MicCapture(ctx, onMicFrame);
mic.onEnded = () => {
  hooks.micOpen = false;
  if (conn.useMic) conn.useMic(null);
  talkEnd();
  notices.show("mic", "The microphone stopped (unplugged or permission withdrawn). Press talk, or pick Hands-free again, to reopen it.");
  syncHooks();
};

const startMessage = () => ({
  type: "start",
  sample_rate: 16000,
  output_sample_rate: OUTPUT_RATE,
  mode,
  tts: true,
  revision: 1, // protocol 1.1: this page acts on duck, pause and resume
});
let serverRevision = 0;
let conn = makeConnection();

// ------------------------------------------------------------------ connection
function makeConnection() {
  let c;
  if (useRtc) {
    if (!rtcPlayer) rtcPlayer = new RtcPlayer(ctx, onPlaying);
    c = new RtcConnection(sessionId, startMessage, rtcPlayer, forcedTransport === "webrtc");
    c.setSending(mode === "continuous" || talking);
    if (mic.stream) c.useMic(mic.stream);
  } else {
    c = new Connection(sessionId, startMessage);
  }
  hooks.transport = c.kind || "websocket";
  // A replaced connection (New session) may still report its close: ignore it.
  c.addEventListener("status", (e) => c === conn && onStatus(e.detail));
  c.addEventListener("message", (e) => c === conn && onMessage(e.detail));
  c.addEventListener("audio", (e) => {
    if (c !== conn) return;
    hooks.audioChunksReceived += 1;
    player.push(e.detail);
    hooks.audioChunksScheduled = player.stats.scheduled;
    syncHooks();
  });
  return c;
}

function onStatus(s) {
  if (s.state === "fallback") {
    // WebRTC does not work from here: the WebSocket, from now on.
    hooks.fallbackReason = s.reason;
    useRtc = false;
    conn.close();
    conn = makeConnection();
    conn.connect();
    syncHooks();
    return;
  }
  hooks.connection = s.state;
  ui.conn.dataset.state = s.state;
  if (s.state === "open") {
    ui.conn.textContent = "Connected";
    notices.clear("conn");
    log.newEpoch();
    if (s.reconnected) hooks.reconnects += 1;
  } else if (s.state === "connecting") {
    ui.conn.textContent = "Connecting…";
  } else if (s.state === "reconnecting") {
    player.stop();
    talking = false;
    renderTalk();
    if (s.code === CLOSE_UNAUTHORIZED) {
      ui.conn.textContent = "Reconnecting…"; // with a new credential, in a moment
    } else if (s.delayMs !== undefined) {
      const secs = Math.max(1, Math.round(s.delayMs / 1000));
      ui.conn.textContent = `Offline, retrying in ${secs} s`;
      notices.show(
        "conn",
        s.code === 4503
          ? `The server is not accepting sessions right now (${s.reason || "busy"}). Retrying in ${secs} s…`
          : `Cannot reach the server at ${location.host}. Retrying in ${secs} s (attempt ${s.attempt})…`,
        { action: "Retry now", onAction: () => conn.retryNow() },
      );
    } else {
      ui.conn.textContent = "Reconnecting…";
    }
  } else if (s.state === "closed") {
    ui.conn.textContent = "Disconnected";
    if (s.code === CLOSE_NOT_FOUND || s.code === CLOSE_DELETED) {
      // Not this learner's (any more): carry on in a new session.
      notices.show("session", `${s.reason} A new session has started.`, { timeoutMs: 8000, kind: "info" });
      switchSession(newSessionId(), { past: false });
    } else if (s.reason) {
      notices.show("conn", s.reason);
    }
  }
  syncHooks();
}

function onMessage(msg) {
  hooks.messages[msg.type] = (hooks.messages[msg.type] || 0) + 1;
  // A credential the server issued (`ready` or `credential`): this browser's from now on.
  if (typeof msg.learner_token === "string") saveToken(msg.learner_token);
  switch (msg.type) {
    case "ready":
      hooks.sessionId = msg.session_id;
      hooks.serverMode = msg.mode;
      serverRevision = Number(msg.revision) || 0;
      break;
    case "vad":
      hooks.vadSpeaking = Boolean(msg.speaking);
      ui.vad.dataset.on = String(hooks.vadSpeaking);
      ui.vad.textContent = hooks.vadSpeaking ? "Speech" : "Silence";
      // The user started talking over the reply. A protocol 1.1 server ducks it at once
      // and stops it only for an interruption (`duck`, `pause`, `interrupted`); an older
      // one does not: stop it now, not when the server says so.
      if (hooks.vadSpeaking && mode === "continuous" && serverRevision < 1) stopPlayback();
      break;
    case "transcript":
      if (msg.final) {
        log.final(msg.turn_id, msg.text);
        if (msg.text) {
          hooks.lastFinalTranscript = msg.text;
          hooks.finalTranscripts.push(msg.text);
        }
      } else {
        log.interim(msg.turn_id, msg.text);
        hooks.lastInterimTranscript = msg.text;
      }
      break;
    case "response_delta":
      log.delta(msg.turn_id, msg.text);
      hooks.replyDeltas += 1;
      break;
    case "response_done":
      log.done(msg.turn_id, msg.text);
      hooks.lastReply = msg.text;
      hooks.replies.push(msg.text);
      break;
    case "audio_start":
      player.begin(msg.turn_id, msg.sample_rate);
      break;
    case "audio_end":
      player.end(msg.turn_id);
      break;
    case "duck":
      player.duck(msg.turn_id, msg.gain_db);
      noteYield(msg);
      break;
    case "pause":
      player.pause(msg.turn_id);
      noteYield(msg);
      break;
    case "resume":
      player.resume(msg.turn_id);
      noteYield(msg);
      break;
    case "interrupted":
      hooks.interruptedReceived += 1;
      stopPlayback();
      log.interrupted(msg.turn_id);
      break;
    case "error":
      hooks.errors.push(msg.code);
      notices.show(`err-${msg.code}`, `The server reported a problem: ${msg.message} (${msg.code})`, {
        timeoutMs: 8000,
      });
      break;
    case "summary":
      notices.show("summary", msg.text, { timeoutMs: 8000, kind: "info" });
      break;
    default:
      break;
  }
  syncHooks();
}

function noteYield(msg) {
  hooks.yields.push({ type: msg.type, turn: msg.turn_id, at: performance.now() });
  if (hooks.yields.length > 50) hooks.yields.shift();
}

function stopPlayback() {
  if (player.stop() > 0) hooks.bargeIns += 1;
}

// ------------------------------------------------------------------ microphone
function onMicFrame(pcm, level) {
  hooks.micFrames += 1;
  hooks.micLevelDb = Math.round(level * 10) / 10;
  if (level > LOUD_DB) hooks.micLoudAt = performance.now();
  const pct = Math.max(0, Math.min(100, ((level + 60) / 60) * 100));
  ui.meterFill.style.width = `${pct}%`;
  ui.meter.setAttribute("aria-valuenow", String(Math.round(Math.max(-60, level))));
  if (mode === "continuous" || talking) {
    if (conn.sendAudio(pcm)) hooks.audioChunksSent += 1; // over WebRTC: sent on the track
  }
  if (hooks.micFrames % 5 === 0) syncHooks();
}

async function ensureMic() {
  await ctx.resume();
  if (mic.open) return true;
  if (!micOpening) {
    micOpening = mic.start().finally(() => {
      micOpening = null;
    });
  }
  try {
    await micOpening;
    if (conn.useMic) conn.useMic(mic.stream);
    hooks.micOpen = true;
    notices.clear("mic");
    if (ctx.state !== "running") {
      notices.show("audio", "Click or press a key anywhere to start listening and hearing replies.", {
        kind: "info",
      });
    }
    syncHooks();
    return true;
  } catch (err) {
    hooks.errors.push(err.code || "mic_failed");
    notices.show("mic", err.message);
    syncHooks();
    return false;
  }
}

// ---------------------------------------------------------------- push-to-talk
async function talkStart() {
  if (mode !== "push_to_talk" || talking) return;
  if (!conn.isOpen) {
    notices.show("conn", "Not connected to the server yet; your words would be lost. Retrying…", {
      action: "Retry now",
      onAction: () => conn.retryNow(),
    });
    return;
  }
  talking = true;
  stopPlayback();
  sending();
  conn.send({ type: "talk_start" });
  renderTalk();
  if (!(await ensureMic())) talkEnd();
}

function talkEnd() {
  if (!talking) return;
  talking = false;
  sending();
  conn.send({ type: "talk_end" });
  renderTalk();
}

/** Over WebRTC the microphone's track carries sound only while it is meant to be sent. */
function sending() {
  if (conn.setSending) conn.setSending(mode === "continuous" || talking);
}

function renderTalk() {
  const handsFree = mode === "continuous";
  ui.talk.setAttribute("aria-pressed", String(talking));
  ui.talk.disabled = handsFree;
  ui.talk.dataset.mode = mode;
  ui.talkLabel.textContent = handsFree ? "Listening hands-free" : talking ? "Listening… release to send" : "Hold to talk";
  ui.hint.textContent = handsFree
    ? "Just talk; a pause ends your turn. Talking while the agent speaks interrupts it."
    : "Hold the button or the space bar while you speak; release to send.";
  hooks.talking = talking;
  hooks.mode = mode;
  syncHooks();
}

async function setMode(next) {
  if (next === mode) return;
  talkEnd();
  mode = next;
  localStorage.setItem(MODE_KEY, mode);
  sending();
  conn.send(startMessage());
  renderTalk();
  if (mode === "continuous") await ensureMic();
}

ui.talk.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  ui.talk.setPointerCapture(e.pointerId);
  talkStart();
});
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  ui.talk.addEventListener(type, () => talkEnd());
}
ui.talk.addEventListener("contextmenu", (e) => e.preventDefault());

function typingTarget(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target.isContentEditable;
}
document.addEventListener("keydown", (e) => {
  if (e.code !== "Space" || typingTarget(e.target) || $("talk-view").hidden) return;
  if (e.target instanceof HTMLButtonElement && e.target !== ui.talk) return;
  if (e.target instanceof HTMLAnchorElement) return;
  e.preventDefault();
  if (!e.repeat) talkStart();
});
document.addEventListener("keyup", (e) => {
  if (e.code !== "Space" || !talking) return;
  e.preventDefault();
  talkEnd();
});
window.addEventListener("blur", () => talkEnd());

for (const input of document.querySelectorAll('input[name="mode"]')) {
  input.checked = input.value === mode;
  input.addEventListener("change", () => input.checked && setMode(input.value));
  // Choosing hands-free again reopens a microphone that stopped.
  input.addEventListener("click", () => mode === "continuous" && input.value === mode && ensureMic());
}

// ------------------------------------------------------------------- typed turns
$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("text-input");
  const text = input.value.trim();
  if (!text) return;
  ctx.resume();
  if (!conn.send({ type: "text", text })) {
    notices.show("conn", "Not connected to the server; your message was kept. Try again in a moment.");
    return;
  }
  stopPlayback();
  input.value = "";
});

// ------------------------------------------------------------------- session
function showSession() {
  ui.sessionId.textContent = sessionId;
  hooks.sessionId = sessionId;
  syncHooks();
}

/** Show the session's earlier exchanges (`/history`) before its live turns. */
async function loadHistory() {
  const forSession = sessionId;
  hooks.historyLoaded = 0;
  try {
    const res = await apiFetch(`/api/sessions/${encodeURIComponent(forSession)}/history`);
    if (forSession !== sessionId) return; // the tab moved on meanwhile
    if (!res.ok) {
      // 404: a new session, nothing said in it yet
      if (res.status !== 404) notices.show("history", `Could not load this session's history: ${await apiError(res)}`);
      return;
    }
    const data = await res.json();
    if (forSession !== sessionId) return;
    const captures = Array.isArray(data.captures) ? data.captures : [];
    for (const c of [...captures].reverse()) log.past(c);
    hooks.historyLoaded = captures.length;
  } catch {
    // unreachable server: the connection status already says so
  }
  syncHooks();
}

/** Make `id` this tab's session: close the connection, reconnect under `id`, and (for a
 * session with a past) show its earlier exchanges. */
function switchSession(id, { past = true } = {}) {
  talkEnd();
  conn.close();
  stopPlayback();
  sessionId = id;
  saveSessionId(sessionId);
  log.clear();
  hooks.historyLoaded = 0;
  showSession();
  conn = makeConnection();
  conn.connect();
  if (past) loadHistory();
}

function openSession(id) {
  if (id !== sessionId) switchSession(id);
  if (location.hash !== "#talk") location.hash = "#talk";
}

$("new-session").addEventListener("click", () => switchSession(newSessionId(), { past: false }));

ui.exportSession.addEventListener("click", async () => {
  const id = sessionId;
  try {
    await download(`/api/sessions/${encodeURIComponent(id)}/export?format=markdown`, `session-${id}.md`);
    notices.clear("export");
  } catch (err) {
    notices.show("export", `Could not export this session: ${err.message}`, { timeoutMs: 8000 });
  }
});

// This browser became another learner (a refused credential was replaced, here or in
// another tab): the current session was the previous learner's, so start a new one.
onLearnerChange(() => {
  hooks.learnerChanges += 1;
  if (forgetting) return; // another tab saw the same forgetting first: this page starts over anyway
  notices.show("learner", "This browser's previous learner is gone (forgotten or expired): you are starting afresh.", {
    timeoutMs: 8000,
    kind: "info",
  });
  switchSession(newSessionId(), { past: false });
  if (!$("history-view").hidden) historyView.load();
});

/** Forget me: everything of this learner is deleted; the page starts over as a new one. */
async function forgetMe() {
  forgetting = true;
  try {
    await forget();
  } finally {
    forgetting = false;
  }
}

async function forget() {
  talkEnd();
  conn.close();
  stopPlayback();
  const reconnect = () => {
    conn = makeConnection();
    conn.connect();
  };
  let res;
  let token;
  try {
    token = await ensureToken();
    res = await apiFetch("/api/me", { method: "DELETE" });
  } catch {
    reconnect();
    throw new Error("the server is unreachable; nothing was deleted. Try again in a moment.");
  }
  if (!res.ok) {
    reconnect();
    throw new Error(await apiError(res));
  }
  dropToken(token);
  hooks.forgotten += 1;
  switchSession(newSessionId(), { past: false });
}

// ------------------------------------------------------------------- views
const search = new SearchView({
  form: $("search-form"),
  input: $("search-input"),
  mine: $("search-mine"),
  status: $("search-status"),
  results: $("results"),
  sessionId: () => sessionId,
  onSearched: (hits) => {
    hooks.searchResults = hits.length;
    syncHooks();
  },
  onOpenSession: openSession,
});

const historyView = new HistoryView({
  list: $("sessions"),
  status: $("history-status"),
  exportAll: $("export-all"),
  forget: $("forget-me"),
  sessionId: () => sessionId,
  onOpen: openSession,
  onDeleted: (id) => {
    hooks.sessionsDeleted += 1;
    syncHooks();
    if (id === sessionId) switchSession(newSessionId(), { past: false });
  },
  onForget: forgetMe,
  onLoaded: (sessions) => {
    hooks.historySessions = sessions.length;
    syncHooks();
  },
});

const VIEWS = ["talk", "search", "history"];

function route() {
  // Other fragments (the skip link's #main) keep the view.
  const asked = location.hash.slice(1);
  const view = VIEWS.includes(asked) ? asked : location.hash === "#main" ? hooks.view : "talk";
  for (const name of VIEWS) {
    $(`${name}-view`).hidden = view !== name;
    const link = $(`nav-${name}`);
    if (view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view !== "talk") talkEnd();
  if (view === "history") historyView.load();
  hooks.view = view;
  syncHooks();
}
window.addEventListener("hashchange", () => {
  route();
  const focus = { search: "search-input", history: "history-title" }[hooks.view] || "main";
  $(focus).focus();
});
window.addEventListener("online", () => conn.retryNow());

Object.defineProperty(hooks, "audioChunksPlayed", { get: () => player.stats.played, enumerable: true });
Object.defineProperty(hooks, "audioUnderruns", { get: () => player.stats.underruns, enumerable: true });
setInterval(syncHooks, 250);
// Browsers start audio only after a user gesture: resume on the first one.
for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, () => ctx.resume().then(() => notices.clear("audio")), {
    once: true,
    capture: true,
  });
}
showSession();
renderTalk();
route();
if (restored) loadHistory();
conn.connect();
if (mode === "continuous") ensureMic();
