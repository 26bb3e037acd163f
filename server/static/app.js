// The page: wires the connection, microphone, player, conversation log and search view.

import { MicCapture } from "./capture.js";
import { Connection } from "./connection.js";
import { ConversationLog } from "./convo.js";
import { ReplyPlayer } from "./player.js";
import { SearchView, apiError } from "./search.js";
import { hooks, syncHooks } from "./hooks.js";
import { Notices } from "./notices.js";
import { newSessionId, saveSessionId, storedSessionId } from "./session.js";

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
  historyLink: $("history-link"),
  exportLink: $("export-link"),
};

const notices = new Notices($("notices"));
const log = new ConversationLog($("log"), $("live"), $("empty"));
const ctx = new AudioContext({ latencyHint: "interactive" });
const player = new ReplyPlayer(ctx, (playing) => {
  hooks.playing = playing;
  ui.agent.dataset.on = String(playing);
  ui.agent.textContent = playing ? "Agent speaking" : "Agent idle";
  syncHooks();
});

let sessionId = storedSessionId();
let mode = localStorage.getItem(MODE_KEY) === "continuous" ? "continuous" : "push_to_talk";
let talking = false;
let micOpening = null;
const mic = new MicCapture(ctx, onMicFrame);
mic.onEnded = () => {
  hooks.micOpen = false;
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
});
let conn = makeConnection();

// ------------------------------------------------------------------ connection
function makeConnection() {
  const c = new Connection(sessionId, startMessage);
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
    if (s.delayMs !== undefined) {
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
    if (s.reason) notices.show("conn", s.reason);
  }
  syncHooks();
}

function onMessage(msg) {
  hooks.messages[msg.type] = (hooks.messages[msg.type] || 0) + 1;
  switch (msg.type) {
    case "ready":
      hooks.sessionId = msg.session_id;
      hooks.serverMode = msg.mode;
      break;
    case "vad":
      hooks.vadSpeaking = Boolean(msg.speaking);
      ui.vad.dataset.on = String(hooks.vadSpeaking);
      ui.vad.textContent = hooks.vadSpeaking ? "Speech" : "Silence";
      // The user started talking over the reply: stop it now, not when the server says so.
      if (hooks.vadSpeaking && mode === "continuous") stopPlayback();
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
    if (conn.sendAudio(pcm)) hooks.audioChunksSent += 1;
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
  conn.send({ type: "talk_start" });
  renderTalk();
  if (!(await ensureMic())) talkEnd();
}

function talkEnd() {
  if (!talking) return;
  talking = false;
  conn.send({ type: "talk_end" });
  renderTalk();
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
  const id = encodeURIComponent(sessionId);
  ui.sessionId.textContent = sessionId;
  ui.historyLink.href = `/api/sessions/${id}/history`;
  ui.exportLink.href = `/api/sessions/${id}/export?format=markdown`;
  hooks.sessionId = sessionId;
}

async function loadHistory() {
  try {
    const res = await fetch(`/api/sessions/${encodeURIComponent(sessionId)}/history`);
    if (!res.ok) {
      if (res.status !== 404) notices.show("history", `Could not load this session's history: ${await apiError(res)}`);
      return;
    }
    const data = await res.json();
    const captures = Array.isArray(data.captures) ? data.captures : [];
    for (const c of [...captures].reverse()) log.past(c);
    hooks.historyLoaded = captures.length;
  } catch {
    // unreachable server: the connection status already says so
  }
  syncHooks();
}

$("new-session").addEventListener("click", () => {
  conn.close();
  stopPlayback();
  sessionId = newSessionId();
  saveSessionId(sessionId);
  log.clear();
  showSession();
  conn = makeConnection();
  conn.connect();
});

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
});

function route() {
  const view = location.hash === "#search" ? "search" : "talk";
  $("talk-view").hidden = view !== "talk";
  $("search-view").hidden = view !== "search";
  $("nav-talk").toggleAttribute("aria-current", view === "talk");
  $("nav-search").toggleAttribute("aria-current", view === "search");
  if (view === "talk") $("nav-talk").setAttribute("aria-current", "page");
  else $("nav-search").setAttribute("aria-current", "page");
  if (view === "search") talkEnd();
  hooks.view = view;
  syncHooks();
}
window.addEventListener("hashchange", () => {
  route();
  (location.hash === "#search" ? $("search-input") : $("main")).focus();
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
loadHistory();
conn.connect();
if (mode === "continuous") ensureMic();
