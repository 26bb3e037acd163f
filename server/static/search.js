// The search view: `POST /api/search` over all of the learner's sessions (or only the
// current one) and a list of hits with safely highlighted snippets.

import { apiError, apiPost } from "./api.js";
import { el, formatTime, snippetFragment } from "./markup.js";

const LIMIT = 20;

export class SearchView {
  constructor({ form, input, mine, status, results, sessionId, onSearched, onOpenSession }) {
    Object.assign(this, { form, input, mine, status, results, sessionId, onSearched, onOpenSession });
    this.pending = null;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run(this.input.value);
    });
  }

  async run(query) {
    query = query.trim();
    if (!query) {
      this.status.textContent = "Type some words to search for.";
      this.input.focus();
      return;
    }
    if (this.pending) this.pending.abort();
    const ctl = new AbortController();
    this.pending = ctl;
    const body = { query, limit: LIMIT };
    if (this.mine.checked) body.session_id = this.sessionId();
    this.status.textContent = "Searching…";
    this.results.setAttribute("aria-busy", "true");
    let data;
    try {
      const timer = setTimeout(() => ctl.abort(), 15000);
      const res = await apiPost("/api/search", body, { signal: ctl.signal });
      clearTimeout(timer);
      if (!res.ok) {
        this.fail(`Search failed: ${await apiError(res)}`);
        return;
      }
      data = await res.json();
    } catch (err) {
      if (this.pending !== ctl) return; // superseded by a newer search
      this.fail(
        err.name === "AbortError"
          ? "Search timed out: the server did not answer in 15 s."
          : "Search failed: the server is unreachable. Check your connection and try again.",
      );
      return;
    } finally {
      if (this.pending === ctl) {
        this.pending = null;
        this.results.removeAttribute("aria-busy");
      }
    }
    this.render(query, Array.isArray(data.results) ? data.results : [], "session_id" in body);
  }

  fail(message) {
    this.status.textContent = message;
    this.status.dataset.error = "true";
  }

  render(query, hits, onlyThisSession) {
    delete this.status.dataset.error;
    this.results.replaceChildren(...hits.map((hit) => this.item(hit)));
    const where = onlyThisSession ? "in this session" : "in all your sessions";
    this.status.textContent =
      hits.length === 0
        ? `No captures match “${query}” ${where}.`
        : `${hits.length} capture${hits.length === 1 ? "" : "s"} for “${query}” ${where}.`;
    this.results.dataset.count = String(hits.length);
    if (this.onSearched) this.onSearched(hits);
  }

  item(hit) {
    const snippet = el("p", { class: "snippet" });
    snippet.append(snippetFragment(hit.snippet || ""));
    const you = el("p", { class: "q" }, el("span", { class: "who" }, "You"), " ", hit.user_text || "");
    const agent = el("p", { class: "a" }, el("span", { class: "who" }, "Agent"), " ", hit.agent_text || "");
    const current = hit.session_id === this.sessionId();
    const open = el(
      "button",
      {
        type: "button",
        class: "link session-link",
        "data-session": hit.session_id,
        "aria-label": current ? "Back to this session" : `Open session ${hit.session_id}`,
      },
      hit.session_id,
    );
    open.addEventListener("click", () => this.onOpenSession && this.onOpenSession(hit.session_id));
    const meta = el(
      "p",
      { class: "meta" },
      el("time", { datetime: hit.timestamp || "" }, formatTime(hit.timestamp)),
      " · session ",
      open,
      current ? " (this session)" : null,
    );
    return el("li", { class: "hit card", "data-id": hit.id }, snippet, you, agent, meta);
  }
}
