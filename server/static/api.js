// Authorised requests to the server's private routes: `Authorization: Bearer <learner
// token>` on every one. A 401 saying the token is expired, revoked or forgotten drops it,
// obtains a new one and tries once more (the new learner owns nothing yet, so the retry
// answers for an empty account: no sessions, a 404 for an old session).

import { RENEW_CODES, ensureToken, renewToken } from "./learner.js";

/** `fetch(path, init)` with the learner's bearer token. */
export async function apiFetch(path, init = {}) {
  let token = await ensureToken();
  let res = await send(path, init, token);
  if (res.status === 401 && RENEW_CODES.has(await errorCode(res))) {
    token = await renewToken(token);
    res = await send(path, init, token);
  }
  return res;
}

function send(path, init, token) {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  if (!headers.has("Accept")) headers.set("Accept", "application/json");
  return fetch(path, { ...init, headers });
}

/** `apiFetch` of a JSON body (POST by default). */
export function apiPost(path, body, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("Content-Type", "application/json");
  return apiFetch(path, { method: "POST", ...init, headers, body: JSON.stringify(body) });
}

async function errorCode(response) {
  try {
    const body = await response.clone().json();
    return (body && body.error && body.error.code) || "";
  } catch {
    return "";
  }
}

/** The message of a JSON API error body, or a generic one. */
export async function apiError(response) {
  try {
    const body = await response.clone().json();
    if (body && body.error && body.error.message) return `${body.error.message} (${body.error.code})`;
  } catch {
    // not JSON
  }
  return `The server answered ${response.status} ${response.statusText}.`;
}

/** The file name of a `Content-Disposition: attachment; filename="..."` answer. */
export function attachmentName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const found = /filename="([^"\\/]{1,200})"/.exec(header);
  return found ? found[1] : fallback;
}
