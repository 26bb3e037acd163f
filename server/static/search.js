// The search view: `POST /api/search` and a list of hits with safely highlighted snippets.

import { el, formatTime, snippetFragment } from "./markup.js";

const LIMIT = 20;

/** The message of a JSON API error body, or a generic one. */
export async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${body.error.message} (${body.error.code})`;
  } catch {
    // not JSON
  }
  return `The server answered ${response.status} ${response.statusText}.`;
}

export class SearchView {
  constructor({ form, input, mine, status, results, sessionId, onSearched }) {
    Object.assign(this, { form, input, mine, status, results, sessionId, onSearched });
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
      const res = await fetch("/api/search", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        signal: ctl.signal,
      });
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
      if (this.pending === ctl) this.pending = null;
      this.results.removeAttribute("aria-busy");
    }
    this.render(query, Array.isArray(data.results) ? data.results : []);
  }

  fail(message) {
    this.status.textContent = message;
    this.status.dataset.error = "true";
  }

  render(query, hits) {
    delete this.status.dataset.error;
    this.results.replaceChildren(...hits.map((hit) => this.item(hit)));
    this.status.textContent =
      hits.length === 0
        ? `No captures match “${query}”.`
        : `${hits.length} capture${hits.length === 1 ? "" : "s"} for “${query}”.`;
    this.results.dataset.count = String(hits.length);
    if (this.onSearched) this.onSearched(hits);
  }

  item(hit) {
    const snippet = el("p", { class: "snippet" });
    snippet.append(snippetFragment(hit.snippet || ""));
    const you = el("p", { class: "q" }, el("span", { class: "who" }, "You"), " ", hit.user_text || "");
    const agent = el("p", { class: "a" }, el("span", { class: "who" }, "Agent"), " ", hit.agent_text || "");
    const meta = el(
      "p",
      { class: "meta" },
      el("time", { datetime: hit.timestamp || "" }, formatTime(hit.timestamp)),
      " · session ",
      el("a", { href: `/api/sessions/${encodeURIComponent(hit.session_id)}/export?format=markdown` }, hit.session_id),
    );
    return el("li", { class: "hit card", "data-id": hit.id }, snippet, you, agent, meta);
  }
}
