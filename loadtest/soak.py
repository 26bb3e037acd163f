"""Soak: N real-time voice sessions for a long time, the server's resources sampled.

    python -m loadtest.soak --callers 200 --duration 1800     # `make soak`

Starts a private Redis (sessions) and the server on loopback (simulated providers,
captures in SQLite with its journal, per-address connection limits raised for the one
load address), runs `loadtest.voice_load` with one step of N callers for the duration,
and every 10 s samples the server's RSS, open file descriptors, asyncio tasks and
event-loop lag (from /admin/api/metrics/system), Redis memory and the journal's size.
After the warm-up (the first fifth of the run, at least a minute) every series must grow
less than 5 % (last minute against the first minute after warm-up). Writes the series as
JSON, a PNG plot (docs/soak.png when under 300 KB) and the figures between the soak markers
of docs/reliability.md. Exit status 1 when a series grew too much or a session failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from loadtest.chaoskit import (
    DOC,
    ROOT,
    SIMULATED,
    PrivateRedis,
    Server,
    dir_bytes,
    png_plot,
    write_section,
)

SERIES = (
    ("rss_mb", "RSS (MB)"),
    ("fds", "open file descriptors"),
    ("tasks", "asyncio tasks"),
    ("loop_lag_ms", "event-loop lag, worst in the last minute (ms)"),
    ("redis_mb", "Redis used memory (MB)"),
    ("journal_kb", "capture journal on disk (KB)"),
)
#: Series whose growth is judged (lag is a latency, the journal is empty while the
#: database is healthy: both are reported, neither can "leak").
JUDGED = ("rss_mb", "fds", "tasks", "redis_mb")
GROWTH_LIMIT = 0.05
LOAD_KEYS = ("callers", "turns", "overhead_ms", "underruns", "errors", "disconnects", "pass")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    p.add_argument("--callers", type=int, default=200)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds measured")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "soak.png")
    p.add_argument("--json", type=Path, default=None, help="write the samples here")
    p.add_argument("--no-doc", action="store_true")
    return p.parse_args(argv)


def sample(server: Server, redis: PrivateRedis, t0: float) -> dict[str, Any]:
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    s: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
    with proc.oneshot():
        s["rss_mb"] = round(proc.memory_info().rss / 2**20, 2)
        s["fds"] = proc.num_fds()
    with contextlib.suppress(Exception):
        system = server.admin("/admin/api/metrics/system")
        s["tasks"] = system["tasks"]
        s["loop_lag_ms"] = system["event_loop_lag"]["max_ms"]
        s["connections"] = system["connections"]["established"]
    mem = redis.memory()
    s["redis_mb"] = round(mem / 2**20, 3) if mem is not None else None
    journal = server.work / "journal"
    s["journal_kb"] = round(dir_bytes(journal) / 1024, 1) if journal.exists() else 0.0
    return s


def growth(samples: list[dict[str, Any]], key: str, warmup: float, window: float) -> float | None:
    """(mean over the last `window` s) / (mean over the first `window` s after warm-up) - 1."""
    after = [s for s in samples if s["t"] >= warmup and s.get(key) is not None]
    if len(after) < 2:
        return None
    first = [s[key] for s in after if s["t"] < after[0]["t"] + window]
    last = [s[key] for s in after if s["t"] > after[-1]["t"] - window]
    base = sum(first) / len(first)
    return (sum(last) / len(last)) / base - 1.0 if base else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lva-soak-"))
    redis = PrivateRedis(work)
    redis.start()
    server = Server(
        work / "server", {**SIMULATED, "REDIS_URL": redis.url, "REDIS_KEY_PREFIX": "soak:"}
    )
    samples: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        server.start()
        assert server.proc is not None
        load_json = work / "load.json"
        load = subprocess.Popen(
            [sys.executable, "-m", "loadtest.voice_load", "--url", server.ws,
             "--steps", str(args.callers), "--measure", str(args.duration),
             "--warmup", "10", "--keep-going", "--max-seconds", str(args.duration + 600),
             "--server-pid", str(server.proc.pid), "--json", str(load_json),
             "--label", "soak"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        t0 = time.monotonic()
        while load.poll() is None:
            samples.append(sample(server, redis, t0))
            print(json.dumps(samples[-1]), flush=True)
            deadline = time.monotonic() + args.interval
            while time.monotonic() < deadline and load.poll() is None:
                time.sleep(0.2)
        if load_json.exists():
            report = json.loads(load_json.read_text())
        alive = server.proc.poll() is None
        errors = len(server.log_lines('"level": "error"'))
    finally:
        server.stop()
        redis.kill()
    # The load's measured part: after its ramp and warm-up, before its drain.
    measured = [s for s in samples if s.get("connections", 0) >= args.callers * 0.95]
    t_first = measured[0]["t"] if measured else 0.0
    t_last = measured[-1]["t"] if measured else 0.0
    warmup = t_first + max(60.0, 0.2 * (t_last - t_first))
    window = 60.0
    inside = [s for s in samples if t_first <= s["t"] <= t_last]
    growths = {k: growth(inside, k, warmup, window) for k, _ in SERIES}
    step = (report.get("steps") or [{}])[0]
    failed = [k for k in JUDGED if growths[k] is None or growths[k] >= GROWTH_LIMIT]
    sessions_ok = bool(step) and not step.get("disconnects") and not step.get("errors")
    ok = not failed and sessions_ok and alive
    result = {
        "ok": ok,
        "callers": args.callers,
        "duration_s": args.duration,
        "warmup_until_s": round(warmup, 1),
        "growth": {k: None if v is None else round(v * 100, 2) for k, v in growths.items()},
        "failed": failed,
        "server_alive": alive,
        "server_error_lines": errors,
        "load": {k: step.get(k) for k in LOAD_KEYS},
        "samples": samples,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    panels = [(label, [s["t"] for s in samples if s.get(k) is not None],
               [s[k] for s in samples if s.get(k) is not None]) for k, label in SERIES]  # fmt: skip
    plot_tmp = work / "soak.png"
    png_plot(plot_tmp, panels)
    size = plot_tmp.stat().st_size
    plot_note = ""
    if size < 300 * 1024:
        args.plot.write_bytes(plot_tmp.read_bytes())
        plot_note = f"![soak series]({os.path.relpath(args.plot, DOC.parent)})"
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if not args.no_doc:
        write_section("soak", _doc(result, started, inside, plot_note))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _first_last(samples: list[dict[str, Any]], key: str) -> str:
    vals = [s[key] for s in samples if s.get(key) is not None]
    if not vals:
        return "-"
    return f"{vals[0]} / {vals[-1]} / {max(vals)}"


def _doc(r: dict[str, Any], started: str, inside: list[dict[str, Any]], plot: str) -> str:
    short = r["duration_s"] < 1800
    load = r["load"]
    o = load.get("overhead_ms") or {}
    rows = []
    for key, label in SERIES:
        g = r["growth"][key]
        judged = "judged" if key in JUDGED else "reported"
        rows.append(
            f"| {label} | {_first_last(inside, key)} | "
            f"{'- (stayed at 0)' if g is None else f'{g:+.2f} %'} ({judged}) |"
        )
    head = "| series | first / last / max under load | growth after warm-up |"
    table = "\n".join([head, "|---|---|---|", *rows])
    verdict = "pass" if r["ok"] else "FAIL"
    if r["failed"]:
        verdict += ": " + ", ".join(r["failed"]) + " grew 5 % or more"
    length = (
        f"**a short run of {r['duration_s'] / 60:.0f} min, to prove the harness**; the "
        "30-minute run (`make soak`) is for a quiet machine and has not been recorded yet"
        if short
        else f"{r['duration_s'] / 60:.0f} min"
    )
    return f"""
## Soak

`make soak` (`CALLERS=200 DURATION=1800` by default; `python -m loadtest.soak --help`):
a private Redis for the sessions, the server with the simulated providers and SQLite
captures, and `loadtest.voice_load` holding {r["callers"]} real-time voice sessions
(speech then silence in 20 ms frames, turn after turn, continuous mode) for the duration.
Every 10 s it samples the server's RSS, file descriptors, asyncio tasks, event-loop lag,
Redis memory and the journal's size. Growth = mean of the last minute over the mean of the
first minute after the warm-up (the first fifth of the measured time, at least a minute),
under 5 % for RSS, file descriptors, tasks and Redis memory. Not part of `make test`.

Last run: {started}, {length}; {r["callers"]} sessions. Result:
**{verdict}**.
Turns: {load.get("turns")}, server overhead over the simulated providers' floor p50 / p95 /
p99 = {o.get("p50")} / {o.get("p95")} / {o.get("p99")} ms, underruns {load.get("underruns")},
errors {load.get("errors") or "none"}, disconnects {load.get("disconnects")}; server
alive: {"yes" if r["server_alive"] else "NO"}; log lines at level error:
{r["server_error_lines"]}. On a 2-core machine
shared with other work the load generator and the server share the cores: the latency
budget of `make bench` (docs/benchmarks.md) is not what a soak judges.

{table}

{plot}

Panels, top to bottom: {"; ".join(label for _, label in SERIES)}; x = seconds since the load
started (the ramp and the drain included); each panel's min and max at its left.
"""


if __name__ == "__main__":
    sys.exit(main())
