// A small time-series line chart drawn on <canvas>: no library, no build step.
// Each series is {name, color, points: [[tMillis, value|null], ...]}; the chart keeps the
// last `maxPoints` of each so memory stays flat however long the page is open.

const GRID = "#2a3441";
const TEXT = "#8a94a6";

export const PALETTE = ["#58a6ff", "#f0883e", "#a371f7", "#3fb950", "#f85149", "#d29922",
  "#39c5cf", "#db61a2"];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
  if (v >= 10 || v === 0) return v.toFixed(0);
  return v.toFixed(v >= 1 ? 1 : 2);
}

export class LineChart {
  constructor(canvas, { maxPoints = 150, unit = "" } = {}) {
    this.canvas = canvas;
    this.maxPoints = maxPoints;
    this.unit = unit;
    this.series = new Map();
  }

  push(name, t, value, color) {
    let s = this.series.get(name);
    if (!s) {
      s = { name, color: color || PALETTE[this.series.size % PALETTE.length], points: [] };
      this.series.set(name, s);
    }
    s.points.push([t, Number.isFinite(value) ? value : null]);
    if (s.points.length > this.maxPoints) s.points.splice(0, s.points.length - this.maxPoints);
  }

  _legendLayout(g, all, width) {
    const items = [];
    let x = 8, row = 0;
    for (const s of all) {
      const last = [...s.points].reverse().find((p) => p[1] !== null);
      const label = `${s.name} ${last ? fmt(last[1]) + this.unit : "–"}`;
      const w = g.measureText(label).width + 26;
      if (x + w > width && x > 8) { x = 8; row++; }
      items.push({ label, color: s.color, x, y: 11 + row * 14 });
      x += w;
    }
    return { items, rows: all.length ? row + 1 : 0 };
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const all = [...this.series.values()];
    const pts = all.flatMap((s) => s.points);
    const values = pts.map((p) => p[1]).filter((v) => v !== null);
    g.font = "11px system-ui, sans-serif";
    const legend = this._legendLayout(g, all, w);
    const left = 44, right = 8, bottom = 18;
    const top = 12 + legend.rows * 14;
    const pw = w - left - right, ph = h - top - bottom;
    const ymax = niceMax(Math.max(0, ...values));
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.strokeStyle = GRID;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(w - right, y + 0.5); g.stroke();
      g.fillStyle = TEXT;
      g.textAlign = "right";
      g.fillText(fmt((ymax * i) / 4) + this.unit, left - 4, y + 4);
    }
    let drawn = 0;
    if (pts.length) {
      const t1 = Math.max(...pts.map((p) => p[0]));
      const t0 = Math.min(...pts.map((p) => p[0]), t1 - 60000);
      const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * pw;
      const y = (v) => top + ph - (v / ymax) * ph;
      g.lineWidth = 1.8;
      for (const s of all) {
        g.strokeStyle = s.color;
        g.beginPath();
        let pen = false;
        for (const [t, v] of s.points) {
          if (v === null) { pen = false; continue; }
          if (pen) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v));
          pen = true;
          drawn++;
        }
        g.stroke();
      }
      g.fillStyle = TEXT;
      g.textAlign = "left";
      g.fillText(Math.round((t1 - t0) / 1000) + " s", left, h - 4);
    }
    // Legend, top-left, with the latest value of each series (wrapped to fit).
    g.textAlign = "left";
    for (const item of legend.items) {
      g.fillStyle = item.color;
      g.fillRect(item.x, item.y - 5, 10, 3);
      g.fillStyle = TEXT;
      g.fillText(item.label, item.x + 14, item.y);
    }
    // For tests and for curious operators: how much data this chart is showing.
    c.dataset.points = String(drawn);
    c.dataset.series = String(all.length);
  }
}
