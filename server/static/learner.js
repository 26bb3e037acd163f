// The learner credential: a token the server issues (`POST /api/learners`) and the page
// keeps in localStorage, so every tab of this browser is the same learner, across reloads
// and days. It is sent as `Authorization: Bearer` (api.js) and `?token=` (connection.js),
// and never written into the DOM.

const KEY = "lva.learnerToken";
const LOCK = "lva.learner";
// What `Authorization: Bearer` accepts (server/identity/http.py); anything else is junk.
const SHAPE = /^[A-Za-z0-9._~+/=-]{1,8192}$/;
// 401 codes after which the token is worth nothing: drop it and become a new learner.
export const RENEW_CODES = new Set(["invalid_token", "token_expired", "learner_forgotten"]);

export class CredentialUnavailable extends Error {
  constructor(message) {
    super(message);
    this.name = "CredentialUnavailable";
  }
}

let memory = null; // the token when storage is disabled (it then lasts as long as the page)
let known = null; // the token this page last used: a different one means another learner
let pending = null; // the one request for a new token in flight in this tab
const listeners = new Set();

function read() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return memory;
  }
}

function write(token) {
  memory = token;
  try {
    if (token === null) localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, token);
  } catch {
    // storage disabled: `memory` has it
  }
}

/** The stored token, or null. */
export function storedToken() {
  const token = read();
  return token && SHAPE.test(token) ? token : null;
}

/**
 * Listen for this page becoming another learner (a refused token was replaced here or in
 * another tab, or the learner was forgotten): `listener(token)`. The first token of a
 * first visit is not a change.
 */
export function onLearnerChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function settle(token) {
  const before = known;
  known = token;
  if (before !== null && token !== before) {
    for (const listener of listeners) listener(token);
  }
  return token;
}

/** Keep a token the server sent (`learner_token` of `ready` or `credential`). */
export function saveToken(token) {
  if (typeof token !== "string" || !SHAPE.test(token)) return;
  write(token);
  settle(token);
}

/**
 * Let go of the learner of `token` on purpose (after "forget me"): the next `ensureToken`
 * makes a new one, which this page does not report as a change (it already started over).
 * If another tab already replaced `token`, its replacement is kept.
 */
export function dropToken(token) {
  if (storedToken() === token) write(null);
  known = null;
}

/** The token, obtaining one first if there is none. */
export function ensureToken() {
  const token = storedToken();
  if (token) return Promise.resolve(settle(token));
  return obtain(null);
}

/**
 * `failed` was refused (expired, revoked, forgotten): drop it and return a new token. If
 * another tab already replaced it, that one is used, so tabs do not race to new learners.
 */
export function renewToken(failed) {
  return obtain(failed);
}

function obtain(failed) {
  if (!pending) {
    pending = exclusive(() => issue(failed)).finally(() => {
      pending = null;
    });
  }
  return pending;
}

async function issue(failed) {
  const current = storedToken();
  if (current && current !== failed) return settle(current);
  write(null);
  let res;
  try {
    res = await fetch("/api/learners", { method: "POST", headers: { Accept: "application/json" } });
  } catch {
    throw new CredentialUnavailable("the server is unreachable");
  }
  if (!res.ok) throw new CredentialUnavailable(`the server answered ${res.status} ${res.statusText}`);
  const body = await res.json().catch(() => null);
  const token = body && body.learner_token;
  if (typeof token !== "string" || !SHAPE.test(token)) {
    throw new CredentialUnavailable("the server sent no usable credential");
  }
  write(token);
  return settle(token);
}

/** Run `fn` while no other tab of this browser runs it (Web Locks where available). */
function exclusive(fn) {
  if (navigator.locks && typeof navigator.locks.request === "function") {
    return navigator.locks.request(LOCK, fn);
  }
  return fn();
}

// Another tab of this browser changed learner: so does this one.
window.addEventListener("storage", (e) => {
  if (e.key !== KEY || !e.newValue || !SHAPE.test(e.newValue)) return;
  settle(e.newValue);
});
