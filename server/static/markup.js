// Safe rendering of server text. Snippets from `/api/search` are HTML-escaped text with
// <mark>...</mark> around the matched words; we never hand them to innerHTML. Everything
// except the mark tags becomes text nodes, so any other markup shows as literal text.

const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#x27;": "'", "&#39;": "'" };

export function unescapeEntities(text) {
  return text.replace(/&(?:amp|lt|gt|quot|#x27|#39);/g, (m) => ENTITIES[m]);
}

/** A DocumentFragment for a highlighted snippet: text nodes and <mark> elements only. */
export function snippetFragment(snippet) {
  const frag = document.createDocumentFragment();
  const parts = String(snippet).split(/(<mark>|<\/mark>)/);
  let mark = null;
  for (const part of parts) {
    if (part === "<mark>") {
      if (!mark) mark = document.createElement("mark");
    } else if (part === "</mark>") {
      if (mark) frag.appendChild(mark);
      mark = null;
    } else if (part) {
      const node = document.createTextNode(unescapeEntities(part));
      (mark || frag).appendChild(node);
    }
  }
  if (mark) frag.appendChild(mark);
  return frag;
}

/** `el("li", {class: "x"}, "text", child)`: build DOM without parsing HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
