"""What a WebRTC session costs the server, beside the WebSocket's figures.

    python -m loadtest.bench_webrtc --steps 1,10,20,30 --write docs/benchmarks.md

Runs the server as `make bench` does (one worker pinned to `--server-cpu`, the simulated
providers) and, in this process pinned to `--gen-cpu`, a pool of headless aiortc callers
(`loadtest.webrtc_caller`): Opus both ways, DTLS and SRTP, protocol v1 on a data channel,
the same speech and silence as `loadtest.voice_load`'s callers. Per step: the server's CPU
(cores, and sessions per core of CPU), its RSS growth per session, the callers' latency
from the end of speech to the first audible reply frame, and the generator's own CPU (a
Python WebRTC client costs about as much as the server's side of it, so on two cores the
generator, not the server, limits how many sessions can be run). `--write` puts the
section between the `webrtc` markers of the benchmarks document (`make bench` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from loadtest.bench_tracing import SERVER_ENV, _stop, _wait_ready, prefix
from loadtest.probe import ServerProbe, cpu_cores, self_sample
from loadtest.script import DEFAULT_WAV, read_wav
from loadtest.webrtc_caller import Caller, cycle_48k

MARKERS = ("<!-- webrtc:start -->", "<!-- webrtc:end -->")
FLOOR_MS = 750.0  # the simulated providers' end of speech -> first audio
VAD_HANGOVER_MS = 120.0  # webrtcvad on loadtest/speech.wav (docs/benchmarks.md)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_webrtc", description=__doc__)
    p.add_argument("--steps", default="1,10,20,30", help="sessions per step, ascending")
    p.add_argument("--measure", type=float, default=20.0, help="seconds measured per step")
    p.add_argument("--silence", type=float, default=2.5)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--gen-cpu", default="1")
    p.add_argument("--nice", type=int, default=0, help="the server's niceness (0 = as is)")
    p.add_argument("--port", type=int, default=18792)
    p.add_argument("--json", type=Path, help="write the steps' figures here")
    p.add_argument("--write", type=Path, help="put the WebRTC section into this document")
    p.add_argument("--from-json", type=Path, help="report the steps an earlier --json saved")
    return p.parse_args(argv)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(values, 0.5), 1), "p95": round(_pct(values, 0.95), 1)}


async def run_step(
    base: str, n: int, args: argparse.Namespace, probe: ServerProbe, idle_rss: int
) -> dict[str, Any]:
    import aiohttp

    speech = read_wav(DEFAULT_WAV)
    cycle, last = cycle_48k(speech, args.silence)
    rng = random.Random(n)
    run = uuid.uuid4().hex[:8]
    callers = [Caller(base, f"rtc-bench-{run}-{i}", cycle, last, rng) for i in range(n)]
    async with aiohttp.ClientSession() as http:
        try:
            gate = asyncio.Semaphore(5)

            async def connect(c: Caller) -> None:
                async with gate:
                    await c.connect(http)

            await asyncio.gather(*(connect(c) for c in callers))
            await asyncio.sleep(len(cycle) / 2 / 48000 + 1.0)  # one whole cycle: warm
            a, gen_a, t0 = probe.sample(), self_sample(), time.monotonic()
            await asyncio.sleep(args.measure)
            b, gen_b, t1 = probe.sample(), self_sample(), time.monotonic()
        finally:
            await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)
    gc.collect()
    latencies = [ms for c in callers for at, ms in c.latencies_ms if t0 <= at <= t1]
    overhead = [ms - FLOOR_MS - VAD_HANGOVER_MS for ms in latencies]
    cores = cpu_cores(a, b)
    return {
        "sessions": n,
        "server_cores": round(cores, 3),
        "sessions_per_core": round(n / cores, 1) if cores > 0 else None,
        "rss_per_session_kb": round((b.rss - idle_rss) / n / 1024, 1),
        "turns": len(latencies),
        "turns_expected_about": round(n * args.measure / (len(cycle) / 2 / 48000), 1),
        "latency_ms": {
            "p50": round(_pct(latencies, 0.5), 1),
            "p95": round(_pct(latencies, 0.95), 1),
        },
        "overhead_ms": {
            "p50": round(_pct(overhead, 0.5), 1),
            "p95": round(_pct(overhead, 0.95), 1),
        },
        "generator_cores": round(cpu_cores(gen_a, gen_b), 3),
        "errors": sum(c.errors for c in callers),
    }


async def run_steps(args: argparse.Namespace, base: str, pid: int) -> list[dict[str, Any]]:
    probe = ServerProbe(pid)
    # One session first: aiortc and PyAV are loaded on the server's first offer (tens of
    # MB, once); the idle RSS is taken after it.
    await run_step(base, 1, argparse.Namespace(**{**vars(args), "measure": 2.0}), probe, 0)
    await asyncio.sleep(3.0)
    idle_rss = probe.sample().rss
    out = []
    for n in [int(s) for s in args.steps.split(",") if s.strip()]:
        step = await run_step(base, n, args, probe, idle_rss)
        print(json.dumps(step), flush=True)
        out.append(step)
        await asyncio.sleep(3.0)  # the sessions end and are recorded
        if step["generator_cores"] > 0.9 or not holds(step, out[0]):
            break  # past the limit (the server's, or the generator's)
    return out


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.gen_cpu and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(c) for c in args.gen_cpu.split(",")})
    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **SERVER_ENV, "DATABASE_PATH": f"{tmp}/captures.db"}
        for name in ("REDIS_URL", "DATABASE_URL"):
            env.pop(name, None)
        cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(args.port)]
        with open(Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen(
                prefix(args.server_cpu, args.nice) + cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_ready(base, server, "server")
                return asyncio.run(run_steps(args, base, server.pid))
            finally:
                _stop(server)


def markdown(steps: list[dict[str, Any]], started: str) -> str:
    rows = [
        "| sessions | server cores | sessions per core of CPU | RSS per session | "
        "latency p50 / p95 | overhead p50 / p95 | generator cores | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        rows.append(
            f"| {s['sessions']} | {s['server_cores']} | {s['sessions_per_core']} | "
            f"{s['rss_per_session_kb']} KB | {s['latency_ms']['p50']} / {s['latency_ms']['p95']}"
            f" ms | {s['overhead_ms']['p50']} / {s['overhead_ms']['p95']} ms | "
            f"{s['generator_cores']} | {s['errors']} |"
        )
    return "\n".join(rows)


def write_section(doc: Path, section: str) -> None:
    start, end = MARKERS
    text = doc.read_text() if doc.exists() else ""
    block = f"{start}\n{section.rstrip()}\n{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        text = head + block + rest.partition(end)[2]
    else:
        anchor = "## Steps"
        text = text.replace(anchor, f"{block}\n\n{anchor}", 1) if anchor in text else text + block
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        steps, started = saved["steps"], saved["started"]
        load = saved.get("load_average")
    else:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        steps = run_all(args)
        load = round(os.getloadavg()[0], 2)
    if args.json:
        saved = {"started": started, "steps": steps, "load_average": load}
        args.json.write_text(json.dumps(saved, indent=1))
    table = markdown(steps, started)
    print(table)
    if args.write:
        write_section(args.write, section(steps, started, table, load))
    return 0


#: How much worse than the one-session step a step's p95 overhead may be and still hold.
HOLD_MS = 50.0


def holds(step: dict[str, Any], first: dict[str, Any]) -> bool:
    return (
        step["overhead_ms"]["p95"] <= first["overhead_ms"]["p95"] + HOLD_MS
        and step["errors"] == 0
        and step["turns"] >= 0.9 * step["turns_expected_about"]
    )


def section(
    steps: list[dict[str, Any]], started: str, table: str, load: float | None = None
) -> str:
    """The WebRTC section: how it was run, the headline, the steps."""
    first = steps[0]
    held = [s for s in steps if holds(s, first)]
    last = held[-1] if held else first
    top = steps[-1]
    limited = top["generator_cores"] > 0.85
    lines = [
        "## WebRTC\n\n",
        f"Generated by `python -m loadtest.bench_webrtc` ({started}; `make bench` keeps "
        "this section). The server as above (one worker pinned to CPU 0, the simulated "
        "providers); the load is a pool of headless aiortc callers on CPU 1, each with the "
        "same speech and silence as the WebSocket callers, sent as Opus on an audio track, "
        "with DTLS, SRTP and protocol v1 on a data channel; the reply comes back as Opus."
        + (f" 1-minute load average of the machine at the end: {load}." if load else "")
        + "\n\n",
        f"A step *holds* when its p95 overhead stays within {HOLD_MS:.0f} ms of the "
        "one-session step's, with no errors and at least 90% of the turns answered.\n\n",
        "- *Sessions per core of CPU*: sessions divided by the cores the server used, at the "
        f"largest step that held ({last['sessions']} sessions; steps run: "
        f"{', '.join(str(s['sessions']) for s in steps)}). The server used "
        f"{last['server_cores']} cores: "
        f"**{last['sessions_per_core']} WebRTC sessions per core**, against about a thousand "
        "WebSocket sessions per core of CPU in the one-worker results above. Opus encoding "
        "and decoding (50 frames a second each way, also while nobody speaks), SRTP and "
        "aiortc's per-packet Python are the cost; the WebSocket path moves PCM untouched.\n",
        f"- *Memory*: {last['rss_per_session_kb']} KB of server RSS per session at "
        f"{last['sessions']} sessions (growth over the server after one WebRTC session had "
        "loaded aiortc and PyAV), against under 100 KB per WebSocket session.\n",
        f"- *Latency*: end of speech to the first audible reply frame, p50 "
        f"{first['latency_ms']['p50']} ms at {first['sessions']} session; *overhead* "
        f"subtracts the same 750 ms floor and 120 ms of VAD hangover as above: p50 "
        f"{first['overhead_ms']['p50']} ms, against 2-3 ms over the WebSocket. Most of it is "
        "by design: aiortc's jitter buffers hold 4 packets (80 ms) on each side, and Opus "
        "adds its framing and look-ahead. A browser's jitter buffer adapts to the network "
        "instead (less on a clean one, more on a lossy one, where the WebSocket would "
        "stall).\n",
    ]
    if limited:
        lines.append(
            f"- The generator used {top['generator_cores']} of its core at "
            f"{top['sessions']} sessions: a Python WebRTC client costs about what the "
            "server's side costs, so on two cores the generator and the server run out of "
            "CPU together, and a step past the last one that held says little about the "
            "server alone.\n"
        )
    lines.append(f"\n{table}\n")
    return "".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
