"""Real-time voice load generator: N concurrent callers over WebSocket protocol v1.

    python -m loadtest.voice_load --url ws://127.0.0.1:8080 --steps 1,50,100,200 \
        --server-pid $(pgrep -f "python -m server") --json out.json --markdown out.md

Each caller streams `loadtest/speech.wav` (about 2 s of speech) and then silence, in 20 ms
frames at real-time pace, turn after turn, in continuous mode, and records per turn the
time from its last speech frame to the first reply audio frame, reply audio underruns
(as the browser player would hear them), errors and disconnects. The number of callers
ramps through `--steps`; each step runs for a fixed time and the ramp stops at the first
step that misses the budget (unless `--keep-going`). Meant for a server running the
`simulated` providers (STT_PROVIDERS=simulated LLM_PROVIDERS=simulated
TTS_PROVIDERS=simulated ENDPOINT_SILENCE_MS=200), whose fixed delays give a 750 ms floor:
what is measured above it is the server's own overhead. A client only: it imports nothing
of the server, and it talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest.probe import ServerProbe, self_sample
from loadtest.report import markdown
from loadtest.script import DEFAULT_WAV, build_script
from loadtest.step import StepPlan, run_step
from loadtest.summary import TARGET_P95_MS

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.voice_load", description=__doc__)
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="server base URL (loopback)")
    p.add_argument("--steps", default="1,50,100,200,300", help="callers per step, ascending")
    p.add_argument("--measure", type=float, default=20.0, help="seconds measured per step")
    p.add_argument("--measure-first", type=float, default=None,
                   help="seconds measured in the first step (default: --measure)")  # fmt: skip
    p.add_argument("--warmup", type=float, default=None, help="default: one turn + 1 s")
    p.add_argument("--drain", type=float, default=2.5)
    p.add_argument("--silence", type=float, default=2.5, help="silence after each utterance")
    p.add_argument("--wav", type=Path, default=DEFAULT_WAV)
    p.add_argument("--vad-mode", type=int, default=2, help="the server's VAD_AGGRESSIVENESS")
    p.add_argument("--endpoint-silence-ms", type=int, default=200)
    p.add_argument("--floor-ms", type=float, default=750.0)
    p.add_argument("--target-p95-ms", type=float, default=TARGET_P95_MS)
    p.add_argument("--server-pid", type=int, help="read the server's CPU and RSS")
    p.add_argument("--keep-going", action="store_true", help="run every step even after a miss")
    p.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--markdown", type=Path, help="write the Markdown table here")
    p.add_argument("--label", default="", help="a name for this run in the report")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--no-uvloop", action="store_true", help="run on asyncio's loop instead of uvloop"
    )
    return p.parse_args(argv)


def loopback_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname not in LOOPBACK:
        raise ValueError(f"{url}: only ws:// to 127.0.0.1 is allowed")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return host, parts.port or 80


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = loopback_target(args.url)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    if not steps or any(n < 1 for n in steps):
        raise ValueError("--steps: positive caller counts, e.g. 1,50,100")
    script = build_script(args.wav, args.silence, args.vad_mode, args.endpoint_silence_ms)
    warmup = args.warmup if args.warmup is not None else script.cycle_s + 1.0
    probe = ServerProbe(args.server_pid) if args.server_pid else None
    baseline = probe.sample() if probe else None
    # Everything allocated so far lives for the whole run: keep the collector off it, so a
    # full collection does not stall the callers' clock.
    gc.collect()
    gc.freeze()
    deadline = time.monotonic() + args.max_seconds
    run_id = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {
        "label": args.label,
        "url": args.url,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "script": {
            "wav": str(args.wav.name),
            "speech_s": script.speech_frames * 0.02,
            "silence_s": args.silence,
            "cycle_s": script.cycle_s,
            "vad_mode": args.vad_mode,
            "vad_hangover_ms": round(script.vad_hangover_s * 1000),
        },
        "floor_ms": args.floor_ms,
        "target_p95_ms": args.target_p95_ms,
        "server_baseline_rss_mb": round(baseline.rss / 2**20, 1) if baseline else None,
        "steps": [],
    }
    for i, n in enumerate(steps):
        measure = args.measure_first if (i == 0 and args.measure_first) else args.measure
        plan = StepPlan(n, measure, warmup, args.drain)
        needed = warmup + measure + args.drain + 20 + n / 50
        if time.monotonic() + needed > deadline:
            report["stopped"] = f"time bound: step {n} would pass --max-seconds"
            break
        result = await run_step(
            plan,
            script,
            host,
            port,
            tag=f"{run_id}-{n}",
            probe=probe,
            baseline_rss=baseline.rss if baseline else None,
            floor_s=args.floor_ms / 1000,
            seed=args.seed + i,
        )
        report["steps"].append(result)
        _progress(result)
        if not result["pass"] and not args.keep_going:
            report["stopped"] = f"step {n} missed the budget: {'; '.join(result['fail_reasons'])}"
            break
        await asyncio.sleep(1.0)  # let the server settle between steps
    passing = [s for s in report["steps"] if s["pass"]]
    report["max_passing_callers"] = max((s["callers"] for s in passing), default=0)
    report["generator_rss_mb"] = round(self_sample().rss / 2**20, 1)
    return report


def _progress(r: dict[str, Any]) -> None:
    o = r["overhead_ms"]
    srv = r.get("server", {})
    print(
        f"N={r['callers']:>4} turns={r['turns']:>5} overhead p50/p95/p99="
        f"{o['p50']}/{o['p95']}/{o['p99']} ms underruns={r['underruns']} "
        f"cpu={srv.get('cpu_cores')} rss/session={srv.get('rss_per_session_kb')} KB "
        f"pacing p99={r['pacing_ms']['p99']} ms gen_cpu={r['generator_cpu_cores']} "
        f"{'PASS' if r['pass'] else 'FAIL ' + '; '.join(r['fail_reasons'])}",
        flush=True,
    )


def _run_loop(args: argparse.Namespace) -> dict[str, Any]:
    """On uvloop when installed: the generator must be cheaper than what it measures."""
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(run(args))
    return asyncio.run(run(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loopback_target(args.url)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = _run_loop(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
