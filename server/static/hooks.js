// Observable state of the page, for people debugging it and for the end-to-end tests:
// `window.__lva` holds the live values and `#lva-state` mirrors them as data- attributes.

export const hooks = {
  connection: "connecting",
  transport: "",
  fallbackReason: "",
  sessionId: "",
  mode: "push_to_talk",
  serverMode: "",
  view: "talk",
  micOpen: false,
  micFrames: 0,
  micLevelDb: -120,
  micLoudAt: 0,
  vadSpeaking: false,
  talking: false,
  playing: false,
  audioChunksSent: 0,
  audioChunksReceived: 0,
  audioChunksScheduled: 0,
  audioChunksPlayed: 0,
  interruptedReceived: 0,
  bargeIns: 0,
  // protocol v1.1: the agent yielding to a possible barge-in ({type, turn, at} each)
  yields: [],
  replyDeltas: 0,
  lastInterimTranscript: "",
  lastFinalTranscript: "",
  finalTranscripts: [],
  lastReply: "",
  replies: [],
  errors: [],
  reconnects: 0,
  historyLoaded: 0,
  historySessions: -1,
  sessionsDeleted: 0,
  forgotten: 0,
  learnerChanges: 0,
  searchResults: -1,
  messages: {},
};

let pending = false;

/** Mirror `hooks` into the DOM (batched to one write per task). */
export function syncHooks() {
  if (pending) return;
  pending = true;
  queueMicrotask(() => {
    pending = false;
    const node = document.getElementById("lva-state");
    if (!node) return;
    for (const [key, value] of Object.entries(hooks)) {
      if (typeof value === "function") continue;
      node.dataset[key] =
        Array.isArray(value) ? value.join(" | ") : typeof value === "object" ? JSON.stringify(value) : String(value);
    }
  });
}

window.__lva = hooks;
