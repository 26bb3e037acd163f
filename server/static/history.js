// The history view: the learner's sessions (`GET /api/sessions`), newest activity first,
// each one reopened with a click, exported, or deleted; plus "export everything" and
// "forget me". What to do on open, delete and forget is the page's (callbacks).

import { apiError, apiFetch } from "./api.js";
import { download } from "./download.js";
import { el, formatTime } from "./markup.js";

const FORGOTTEN = "Everything you said has been deleted. You are starting over as a new learner.";

const LIMIT = 200; // sessions without exchanges are listed by the server but not shown

function exchanges(n) {
  return `${n} exchange${n === 1 ? "" : "s"}`;
}

export class HistoryView {
  /**
   * @param {object} o
   * @param {HTMLElement} o.list      the <ol> of sessions
   * @param {HTMLElement} o.status    a polite live region
   * @param {HTMLElement} o.exportAll "Export everything" button
   * @param {HTMLElement} o.forget    "Forget me" button
   * @param {() => string} o.sessionId the tab's current session id
   * @param {(id: string) => void} o.onOpen
   * @param {(id: string) => void} o.onDeleted
   * @param {() => Promise<void>} o.onForget  runs the forgetting (throws an Error to report)
   * @param {(sessions: object[]) => void} o.onLoaded
   */
  constructor(o) {
    Object.assign(this, o);
    this.loading = null;
    this.exportAll.addEventListener("click", () => this.exportEverything());
    this.forget.addEventListener("click", () => this.forgetMe());
  }

  say(message, error = false) {
    this.status.textContent = message;
    if (error) this.status.dataset.error = "true";
    else delete this.status.dataset.error;
  }

  /** (Re)load the list. */
  async load() {
    if (this.loading) this.loading.abort();
    const ctl = new AbortController();
    this.loading = ctl;
    this.list.setAttribute("aria-busy", "true");
    this.say("Loading your sessions…");
    let sessions;
    try {
      const res = await apiFetch(`/api/sessions?limit=${LIMIT}`, { signal: ctl.signal });
      if (!res.ok) {
        this.say(`Could not load your sessions: ${await apiError(res)}`, true);
        return;
      }
      const data = await res.json();
      sessions = (Array.isArray(data.sessions) ? data.sessions : []).filter((s) => s.captures > 0);
    } catch (err) {
      if (err.name !== "AbortError") {
        this.say("Could not load your sessions: the server is unreachable. Try again in a moment.", true);
      }
      return;
    } finally {
      if (this.loading === ctl) {
        this.loading = null;
        this.list.removeAttribute("aria-busy");
      }
    }
    if (this.loading !== null) return; // a newer load is on its way
    this.render(sessions);
  }

  render(sessions) {
    this.list.replaceChildren(...sessions.map((s) => this.row(s)));
    this.list.dataset.count = String(sessions.length);
    if (sessions.length > 0) this.forgotten = false;
    this.say(
      sessions.length > 0
        ? `${sessions.length} session${sessions.length === 1 ? "" : "s"}, most recent first.`
        : this.forgotten // a reload of the new learner's empty list must not hide this
          ? FORGOTTEN
          : "No sessions yet. What you say or type in Talk is kept here.",
    );
    if (this.onLoaded) this.onLoaded(sessions);
  }

  row(s) {
    const title = s.title || "Untitled";
    const current = s.session_id === this.sessionId();
    const open = el(
      "button",
      { type: "button", class: "session-open", "aria-describedby": `session-meta-${s.session_id}` },
      title,
    );
    if (!s.title) open.classList.add("untitled");
    open.addEventListener("click", () => this.onOpen(s.session_id));
    const meta = el(
      "p",
      { class: "meta", id: `session-meta-${s.session_id}` },
      el("time", { datetime: s.last_at || s.created_at || "" }, formatTime(s.last_at || s.created_at)),
      ` · ${exchanges(s.captures)}`,
      current ? el("span", { class: "badge" }, "this tab") : null,
    );
    const exportButton = el(
      "button",
      { type: "button", class: "secondary", "aria-label": `Export “${title}” (Markdown)` },
      "Export",
    );
    exportButton.addEventListener("click", () => this.exportSession(s.session_id));
    const remove = el("button", { type: "button", class: "danger", "aria-label": `Delete “${title}”` }, "Delete");
    remove.addEventListener("click", () => this.remove(s, title));
    return el(
      "li",
      { class: "session-row card", "data-session": s.session_id, "data-current": String(current) },
      el("div", { class: "session-main" }, open, meta),
      el("div", { class: "session-actions" }, exportButton, remove),
    );
  }

  async remove(s, title) {
    if (!window.confirm(`Delete “${title}” and its ${exchanges(s.captures)}? This cannot be undone.`)) return;
    const row = this.list.querySelector(`li[data-session="${CSS.escape(s.session_id)}"]`);
    this.say(`Deleting “${title}”…`);
    let res;
    try {
      res = await apiFetch(`/api/sessions/${encodeURIComponent(s.session_id)}`, { method: "DELETE" });
    } catch {
      this.say("Could not delete: the server is unreachable. Try again in a moment.", true);
      return;
    }
    if (!res.ok && res.status !== 404) {
      this.say(`Could not delete “${title}”: ${await apiError(res)}`, true);
      return;
    }
    // Keep the keyboard where it was: on the next row, else the previous, else the status.
    const next = row && (row.nextElementSibling || row.previousElementSibling);
    if (row) row.remove();
    const left = this.list.children.length;
    this.list.dataset.count = String(left);
    this.say(`Deleted “${title}”.${left === 0 ? " No sessions left." : ""}`);
    if (next) next.querySelector(".session-open").focus();
    else this.status.focus();
    this.onDeleted(s.session_id);
  }

  async exportSession(sessionId) {
    try {
      const name = await download(
        `/api/sessions/${encodeURIComponent(sessionId)}/export?format=markdown`,
        `session-${sessionId}.md`,
      );
      this.say(`Downloaded ${name}.`);
    } catch (err) {
      this.say(`Could not export: ${err.message}`, true);
    }
  }

  async exportEverything() {
    try {
      const name = await download("/api/me/export?format=markdown", "my-learning.md");
      this.say(`Downloaded ${name}.`);
    } catch (err) {
      this.say(`Could not export: ${err.message}`, true);
    }
  }

  async forgetMe() {
    const ok = window.confirm(
      "Forget me: delete every session and everything you said, for good, and start over as a new learner?",
    );
    if (!ok) return;
    this.forget.disabled = true;
    this.say("Deleting everything…");
    try {
      await this.onForget();
    } catch (err) {
      this.say(`Could not forget you: ${err.message}`, true);
      return;
    } finally {
      this.forget.disabled = false;
    }
    if (this.loading) this.loading.abort(); // a list of the forgotten learner's sessions
    this.forgotten = true;
    this.render([]);
  }
}
