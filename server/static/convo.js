// The conversation log: one list item per turn (your words, then the agent's reply).
// Turn ids restart on every connection, so turns are keyed by (connection epoch, turn id).

import { el, formatTime } from "./markup.js";

export class ConversationLog {
  constructor(list, live, empty) {
    this.list = list;
    this.live = live;
    this.empty = empty;
    this.epoch = 0;
    this.turns = new Map();
  }

  newEpoch() {
    this.epoch += 1;
  }

  clear() {
    this.turns.clear();
    this.list.replaceChildren();
    this.live.textContent = "";
    this.empty.hidden = false;
  }

  turn(turnId) {
    const key = `${this.epoch}:${turnId}`;
    let t = this.turns.get(key);
    if (!t) {
      const user = el("p", { class: "user" });
      const agent = el("p", { class: "agent", hidden: true });
      const li = el("li", { class: "turn", "data-turn": key }, user, agent);
      this.list.append(li);
      this.empty.hidden = true;
      t = { li, user, agent, reply: "" };
      this.turns.set(key, t);
    }
    return t;
  }

  /** Keep the newest turn in view inside the log, unless the reader scrolled up. */
  scroll() {
    const list = this.list;
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 240) {
      list.scrollTop = list.scrollHeight;
    }
  }

  interim(turnId, text) {
    const t = this.turn(turnId);
    t.user.textContent = text;
    t.user.classList.add("interim");
    this.live.textContent = text ? `Hearing: ${text}` : "";
    this.scroll();
  }

  final(turnId, text) {
    const key = `${this.epoch}:${turnId}`;
    this.live.textContent = "";
    if (!text) {
      // Nothing was understood: drop the interim bubble if there was one.
      const t = this.turns.get(key);
      if (t && !t.reply) {
        t.li.remove();
        this.turns.delete(key);
        this.empty.hidden = this.turns.size > 0 || this.list.children.length > 0;
      }
      return;
    }
    const t = this.turn(turnId);
    t.user.textContent = text;
    t.user.classList.remove("interim");
    t.user.classList.add("final");
    this.scroll();
  }

  delta(turnId, text) {
    const t = this.turn(turnId);
    t.reply += text;
    t.agent.hidden = false;
    t.agent.textContent = t.reply;
    t.agent.classList.add("streaming");
    this.scroll();
  }

  done(turnId, text) {
    const t = this.turn(turnId);
    t.reply = text;
    t.agent.hidden = false;
    t.agent.textContent = text;
    t.agent.classList.remove("streaming");
    t.agent.classList.add("done");
  }

  interrupted(turnId) {
    const t = this.turns.get(`${this.epoch}:${turnId}`);
    if (!t) return;
    t.agent.classList.add("interrupted");
    t.agent.title = "You interrupted this reply";
  }

  /** A capture from `/api/sessions/{id}/history`, shown before the live turns. */
  past(capture) {
    const when = el("time", { datetime: capture.timestamp || "" }, formatTime(capture.timestamp));
    const li = el(
      "li",
      { class: "turn past" },
      el("p", { class: "user final" }, capture.user_text || ""),
      el("p", { class: "agent done" }, capture.agent_text || ""),
      el("p", { class: "meta" }, when),
    );
    this.list.prepend(li);
    this.empty.hidden = true;
  }
}
