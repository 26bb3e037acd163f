// User-facing messages (failures first of all), one per key so a repeated problem updates
// its message instead of stacking copies. The container is an assertive live region.

export class Notices {
  constructor(container) {
    this.container = container;
    this.items = new Map();
  }

  show(key, message, { action, onAction, timeoutMs, kind = "error" } = {}) {
    let item = this.items.get(key);
    if (!item) {
      item = { node: document.createElement("div"), timer: null };
      item.node.className = "notice";
      this.items.set(key, item);
      this.container.append(item.node);
    }
    clearTimeout(item.timer);
    item.node.dataset.kind = kind;
    item.node.dataset.key = key;
    const text = document.createElement("span");
    text.textContent = message;
    const buttons = [];
    if (action && onAction) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = action;
      b.addEventListener("click", onAction);
      buttons.push(b);
    }
    const close = document.createElement("button");
    close.type = "button";
    close.className = "dismiss";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    close.addEventListener("click", () => this.clear(key));
    item.node.replaceChildren(text, ...buttons, close);
    if (timeoutMs) item.timer = setTimeout(() => this.clear(key), timeoutMs);
  }

  clear(key) {
    const item = this.items.get(key);
    if (!item) return;
    clearTimeout(item.timer);
    item.node.remove();
    this.items.delete(key);
  }
}
