// The session id: kept in sessionStorage so a reload or a reconnection continues the same
// conversation in this tab, while another tab gets its own.

const KEY = "lva.sessionId";
const VALID = /^[A-Za-z0-9_-]{1,64}$/;

export function newSessionId() {
  // getRandomValues works on plain http:// too (randomUUID needs a secure context).
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function saveSessionId(id) {
  try {
    sessionStorage.setItem(KEY, id);
  } catch {
    // storage disabled: the id lasts as long as the page
  }
}

/** Whether this tab already has a session id (a reload), as opposed to a new tab. */
export function hasStoredSessionId() {
  try {
    return VALID.test(sessionStorage.getItem(KEY) || "");
  } catch {
    return false;
  }
}

export function storedSessionId() {
  let id = null;
  try {
    id = sessionStorage.getItem(KEY);
  } catch {
    // storage disabled
  }
  if (id && VALID.test(id)) return id;
  id = newSessionId();
  saveSessionId(id);
  return id;
}
