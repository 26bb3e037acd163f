// Admin dashboard: polls the admin API with the key from sessionStorage and draws charts.
import { LineChart } from "./charts.js";

const KEY_NAME = "lva-admin-key";
const POLL_MS = 2000;
const HEALTH_EVERY = 5; // polls
const $ = (id) => document.getElementById(id);

const charts = {
  rps: new LineChart($("c-rps"), { unit: "" }),
  err: new LineChart($("c-err"), { unit: "%" }),
  lat: new LineChart($("c-lat"), { unit: "" }),
  voice: new LineChart($("c-voice"), { unit: "" }),
  sessions: new LineChart($("c-sessions"), { unit: "" }),
  cpu: new LineChart($("c-cpu"), { unit: "%" }),
  mem: new LineChart($("c-mem"), { unit: "" }),
  lag: new LineChart($("c-lag"), { unit: "" }),
};
let previous = null; // {t, requests, errors} of the last poll, for rates
let polls = 0;
let timer = null;

class AuthError extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_NAME);
  if (!key) throw new AuthError("Enter the admin key.");
  const headers = { "X-Admin-Key": key, ...(options.headers || {}) };
  const r = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401 || r.status === 429 || r.status === 503 && body?.error?.code === "admin_disabled") {
    throw new AuthError(body?.error?.message || `HTTP ${r.status}`);
  }
  if (!r.ok && !(r.status === 503 && path.includes("/health/"))) {
    throw new Error(body?.error?.message || `HTTP ${r.status}`);
  }
  return body;
}

function showKeyForm(message) {
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = message || "";
  $("key-input").focus();
}

function showDashboard() {
  $("key-form").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
}

const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
const cell = (text) => { const td = document.createElement("td"); td.textContent = text; td.title = text; return td; };
function row(cells) { const tr = document.createElement("tr"); for (const c of cells) tr.append(cell(String(c ?? "–"))); return tr; }
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}

function renderOverview(m, endpoints, t) {
  // With several workers, rates come from the fleet totals (the same whichever worker
  // answers); otherwise from this process. A change of source starts the rates afresh.
  const fleet = m.fleet;
  const req = fleet
    ? { total: fleet.requests.total, errors: fleet.requests.errors_5xx, error_rate: fleet.requests.error_rate_5xx }
    : m.requests;
  const source = fleet ? "fleet" : m.pid;
  if (previous && previous.source !== source) previous = null;
  let rps = null, errPct = null;
  if (previous && t > previous.t) {
    const dt = (t - previous.t) / 1000;
    const dn = req.total - previous.requests;
    rps = Math.max(0, dn / dt);
    errPct = dn > 0 ? (100 * (req.errors - previous.errors)) / dn : 0;
  }
  previous = { t, source, requests: req.total, errors: req.errors };
  const lat = fleet ? fleet.requests.latency_ms : m.requests.recent_latency_ms;
  charts.rps.push("req/s", t, rps);
  charts.err.push("5xx %", t, errPct, "#f85149");
  charts.lat.push("p50", t, lat.p50);
  charts.lat.push("p95", t, lat.p95);
  charts.lat.push("p99", t, lat.p99);
  const stages = Object.entries(m.voice.stages_ms).sort((a, b) => (a[1].p50 ?? 0) - (b[1].p50 ?? 0));
  for (const [name, s] of stages) charts.voice.push(name, t, s.recent.count ? s.recent.p50 : s.p50);
  const sessions = fleet ? fleet.sessions.active : m.sessions.active;
  const sockets = fleet ? fleet.websockets.active : m.websockets.active;
  charts.sessions.push("voice sessions", t, sessions);
  charts.sessions.push("websockets", t, sockets);
  $("s-rps").textContent = rps === null ? "–" : rps.toFixed(1);
  $("s-err").textContent = `${(100 * req.error_rate).toFixed(2)} %`;
  $("s-p95").textContent = ms(lat.p95);
  $("s-sessions").textContent = sessions;
  $("s-ws").textContent = sockets;
  $("s-turns").textContent = fleet ? fleet.voice.turns : m.voice.turns;
  $("s-uptime").textContent = duration(m.uptime_seconds);
  renderMaintenance(m.maintenance);
  const tbody = $("endpoints");
  tbody.replaceChildren(...endpoints.endpoints.slice(0, 40).map((e) => row([
    e.route, e.method, e.count, e.errors, e.latency_ms.p50, e.latency_ms.p95, e.latency_ms.p99])));
}

function renderSystem(s, t) {
  charts.cpu.push("CPU", t, s.cpu_percent, "#f0883e");
  charts.mem.push("RSS MB", t, s.memory.rss_mb, "#58a6ff");
  charts.lag.push("current", t, s.event_loop_lag.current_ms, "#a371f7");
  charts.lag.push("max 1 min", t, s.event_loop_lag.max_ms, "#f85149");
  $("s-cpu").textContent = `${s.cpu_percent.toFixed(0)} %`;
  $("s-rss").textContent = `${s.memory.rss_mb.toFixed(0)} MB`;
  $("s-lag").textContent = s.event_loop_lag.current_ms === null ? "–" : `${s.event_loop_lag.current_ms.toFixed(1)} ms`;
}

function renderErrors(e) {
  $("errors").replaceChildren(...e.errors.map((x) => row([
    x.time_iso.slice(11, 19), x.route, x.status || x.kind, x.code, x.request_id || x.session_id || "–"])));
}

function renderMaintenance(m) {
  $("m-state").textContent = m.enabled ? "ON" : "off";
  $("m-since").textContent = m.changed_at ? `since ${new Date(m.changed_at * 1000).toISOString().slice(11, 19)} UTC` : "";
  const btn = $("m-toggle");
  btn.textContent = m.enabled ? "Disable maintenance" : "Enable maintenance";
  btn.classList.toggle("danger", !m.enabled);
  btn.dataset.enabled = String(m.enabled);
  if (m.enabled && document.activeElement !== $("m-message")) $("m-message").value = m.message;
}

function renderHealth(h) {
  const pill = $("health");
  pill.textContent = `health: ${h.status}`;
  pill.className = `pill ${h.status}`;
  pill.title = h.reasons.join("\n");
  $("health-checks").replaceChildren(...Object.entries(h.checks).map(([name, c]) => {
    const li = document.createElement("li");
    li.className = c.status;
    const dot = document.createElement("span");
    dot.className = "dot";
    li.append(dot, `${name}: ${c.status}${c.reason ? " — " + c.reason : ""} (${c.latency_ms} ms)`);
    return li;
  }));
}

async function poll() {
  const t = Date.now();
  try {
    const [m, endpoints, sys, errors] = await Promise.all([
      api("/admin/api/metrics"), api("/admin/api/metrics/endpoints"),
      api("/admin/api/metrics/system"), api("/admin/api/metrics/errors?limit=20"),
    ]);
    showDashboard();
    renderOverview(m, endpoints, t);
    renderSystem(sys, t);
    renderErrors(errors);
    if (polls++ % HEALTH_EVERY === 0) renderHealth(await api("/admin/api/health/detailed"));
    for (const c of Object.values(charts)) c.draw();
    const who = m.fleet ? `${m.fleet.workers} workers · answered by pid ${m.pid}` : `pid ${m.pid}`;
    $("updated").textContent = `updated ${new Date(t).toLocaleTimeString()} · ${who}`;
  } catch (err) {
    if (err instanceof AuthError) {
      stop();
      sessionStorage.removeItem(KEY_NAME);
      showKeyForm(err.message);
      return;
    }
    $("updated").textContent = `update failed: ${err.message}`;
  }
}

function start() { stop(); previous = null; polls = 0; poll(); timer = setInterval(poll, POLL_MS); }
function stop() { if (timer) clearInterval(timer); timer = null; }

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_NAME, $("key-input").value.trim());
  $("key-input").value = "";
  start();
});

$("logout").addEventListener("click", () => { stop(); sessionStorage.removeItem(KEY_NAME); showKeyForm(""); });

$("m-toggle").addEventListener("click", async () => {
  const enable = $("m-toggle").dataset.enabled !== "true";
  if (enable && !confirm("Enable maintenance mode? New sessions and API calls will get 503.")) return;
  $("m-error").textContent = "";
  try {
    renderMaintenance(await api("/admin/api/maintenance", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ enabled: enable, message: $("m-message").value }),
    }));
  } catch (err) {
    $("m-error").textContent = err.message;
  }
});

window.addEventListener("resize", () => { for (const c of Object.values(charts)) c.draw(); });

if (sessionStorage.getItem(KEY_NAME)) start(); else showKeyForm("");
