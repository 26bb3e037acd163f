"""What turn traces cost: the voice load's 300-session step with tracing off and on.

    python -m loadtest.bench_tracing --rounds 2 --write docs/benchmarks.md

Each round runs the server twice, tracing off then on (the order alternates between
rounds, so a drift of the machine's load does not always favour one side): one worker
pinned to `--server-cpu` with the simulated providers, as `make bench` runs it, and
`loadtest.voice_load` at `--callers` for one step, pinned to `--gen-cpu`. With tracing on
the server exports every turn over OTLP/HTTP to a loopback collector that counts and
discards (`loadtest.otlp_sink`, on the generator's CPU). Reported per run: server CPU
(seconds per session-minute), latency and overhead percentiles, and the spans exported
and dropped (from the server's log at shutdown). `--write` puts the section between the
`tracing` markers of the benchmarks document (`make bench` keeps it); `--from-json`
writes it from the runs a previous `--json` saved, without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

MARKERS = ("<!-- tracing:start -->", "<!-- tracing:end -->")
SERVER_ENV = {
    "STT_PROVIDERS": "simulated",
    "LLM_PROVIDERS": "simulated",
    "TTS_PROVIDERS": "simulated",
    "ENDPOINT_SILENCE_MS": "200",
    "LOG_FORMAT": "json",
    "PROMETHEUS_MULTIPROC_DIR": "",
    # Every caller comes from 127.0.0.1: the per-address connection limits are raised for
    # the generator's one address (docs/security.md#limits); the others stay at defaults.
    "MAX_SOCKETS_PER_ADDRESS": "100000",
    "CONNECTIONS_PER_SECOND": "100000",
    "CONNECTIONS_BURST": "100000",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_tracing", description=__doc__)
    p.add_argument("--callers", type=int, default=300)
    p.add_argument("--measure", type=float, default=30.0, help="seconds measured per run")
    p.add_argument("--rounds", type=int, default=2, help="off/on pairs, interleaved")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--gen-cpu", default="1")
    p.add_argument("--nice", type=int, default=-10, help="0 = as everything else")
    p.add_argument("--port", type=int, default=18790)
    p.add_argument("--sink-port", type=int, default=18791)
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--write", type=Path, help="put the Tracing section into this document")
    p.add_argument("--from-json", type=Path, help="report the runs saved by an earlier --json")
    return p.parse_args(argv)


def prefix(cpus: str, niceness: int) -> list[str]:
    out: list[str] = []
    if niceness and subprocess.run(["nice", "-n", str(niceness), "true"]).returncode == 0:
        out += ["nice", "-n", str(niceness)]
    if cpus and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        out += ["taskset", "-c", cpus]
    return out


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _closing_counts(log: Path) -> dict[str, int]:
    """The server's "traces closed" line: spans exported and dropped over its life."""
    for line in log.read_text(errors="replace").splitlines():
        if '"traces closed"' in line:
            record = json.loads(line)
            return {k: int(record[k]) for k in ("spans_exported", "spans_dropped")}
    return {}


def run_once(args: argparse.Namespace, tracing: bool, work: Path, label: str) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k not in ("REDIS_URL", "DATABASE_URL")
    }
    env |= SERVER_ENV | {"DATABASE_PATH": str(work / f"{label}.db")}
    if tracing:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{args.sink_port}"
    log = work / f"{label}.log"
    server_cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(args.port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            prefix(args.server_cpu, args.nice) + server_cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{args.port}/health/ready", server, "server")
        time.sleep(1.0)
        report_path = work / f"{label}.json"
        load = [
            sys.executable,
            "-m",
            "loadtest.voice_load",
            "--url",
            f"ws://127.0.0.1:{args.port}",
            "--steps",
            str(args.callers),
            "--measure",
            str(args.measure),
            "--server-pid",
            str(server.pid),
            "--keep-going",
            "--label",
            label,
            "--json",
            str(report_path),
        ]
        subprocess.run(prefix(args.gen_cpu, args.nice) + load, check=True)
    finally:
        _stop(server)
    step = json.loads(report_path.read_text())["steps"][0]
    cores = step["server"]["cpu_cores"]
    return {
        "label": label,
        "tracing": tracing,
        "started": time.strftime("%H:%M:%S", time.gmtime()),
        "load_1min": round(os.getloadavg()[0], 2),
        "callers": step["callers"],
        "turns": step["turns"],
        "cpu_cores": cores,
        "cpu_s_per_session_minute": round(cores * 60 / step["callers"], 4),
        "latency_ms": step["latency_ms"],
        "overhead_ms": step["overhead_ms"],
        "pass": step["pass"],
        **_closing_counts(log),
    }


NOTES = """
Run to run, the server's CPU at this step moves by up to about 8 % with the same code (the
other engineers' work shares the machine), so one pair proves little: read the mean, the
median round and the per-round figures together. What a traced turn costs, measured by
hand in one process (2026-11-29, `time.process_time` over 3000 turns of seven spans):
planning and making the spans 46-48 us on the event loop, encoding them to OTLP protobuf
81-83 us in the export thread, 130-150 us a turn with the HTTP export. The benchmark's
callers take a turn every 4.4 s (68 turns a second at 300 sessions) against about 5 ms of
server CPU per turn, which puts tracing at 2.5-3 %: what the rounds show. Real callers
take fewer turns a minute, so it costs them less. Made through the Tracer API as live
spans, the same seven spans took 182-204 us on the loop and three times the garbage
collector's time, and the step cost 15 % and 11 % more CPU (3 and 4 rounds, 2026-11-29,
with p95 overhead 2-3 ms higher); see `server/turn_tracer.py`. Encoding a request of 512
spans holds the interpreter lock about 6 ms; requests of 128 keep that under 2 ms.

Tracing off, a turn gains a few clock readings, one small record and one no-op observer
call (1.3 us, against about 5 ms of CPU per turn: under 0.03 %), nothing per audio frame,
and the OpenTelemetry SDK is not imported: the *off* runs are the server as it was.
"""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    off = [r for r in runs if not r["tracing"]]
    on = [r for r in runs if r["tracing"]]
    cpu_off = _mean([r["cpu_s_per_session_minute"] for r in off])
    cpu_on = _mean([r["cpu_s_per_session_minute"] for r in on])
    pairs = [
        (b["cpu_s_per_session_minute"] / a["cpu_s_per_session_minute"] - 1) * 100
        for a, b in zip(off, on, strict=False)
    ]
    return {
        "cpu_off": cpu_off,
        "cpu_on": cpu_on,
        "cpu_overhead_pct": (cpu_on / cpu_off - 1) * 100,
        "pair_overheads_pct": pairs,
        "median_pair_pct": statistics.median(pairs) if pairs else 0.0,
        "p50_overhead_ms": _mean([r["overhead_ms"]["p50"] for r in on])
        - _mean([r["overhead_ms"]["p50"] for r in off]),
        "p95_overhead_ms": _mean([r["overhead_ms"]["p95"] for r in on])
        - _mean([r["overhead_ms"]["p95"] for r in off]),
    }


def markdown(args: argparse.Namespace, runs: list[dict[str, Any]], s: dict[str, Any]) -> str:
    pairs = ", ".join(f"{p:+.1f} %" for p in s["pair_overheads_pct"])
    lines = [
        MARKERS[0],
        "## Tracing",
        "",
        f"What turn traces cost at the {args.callers}-session step, one worker pinned to CPU "
        f"{args.server_cpu}, the load generator and a loopback OTLP collector that counts and "
        f"discards (`loadtest/otlp_sink.py`) on CPU {args.gen_cpu}; {args.measure:.0f} s "
        f"measured per run, tracing off and on interleaved ({args.rounds} rounds, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}):",
        "",
        "```",
        f"python -m loadtest.bench_tracing --callers {args.callers} --measure "
        f"{args.measure:.0f} --rounds {args.rounds} --write docs/benchmarks.md",
        "```",
        "",
        "| run | tracing | load (1 min) | turns | server CPU (cores) | CPU s per session-minute "
        "| latency p50 / p95 (ms) | overhead p50 / p95 (ms) | spans exported / dropped |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in runs:
        spans = (
            f"{r.get('spans_exported', '?')} / {r.get('spans_dropped', '?')}"
            if r["tracing"]
            else "-"
        )
        lat, ovh = r["latency_ms"], r["overhead_ms"]
        lines.append(
            f"| {r['label']} ({r['started']} UTC) | {'on' if r['tracing'] else 'off'} "
            f"| {r['load_1min']} | {r['turns']} | {r['cpu_cores']:.3f} "
            f"| {r['cpu_s_per_session_minute']:.4f} | {lat['p50']} / {lat['p95']} "
            f"| {ovh['p50']} / {ovh['p95']} | {spans} |"
        )
    lines += [
        "",
        f"Server CPU with tracing on: **{s['cpu_overhead_pct']:+.1f} %** "
        f"({s['cpu_on']:.4f} against {s['cpu_off']:.4f} CPU seconds per session-minute; "
        f"median round {s['median_pair_pct']:+.1f} %; per round: {pairs}). "
        "Latency overhead with tracing on, mean of the runs: "
        f"p50 {s['p50_overhead_ms']:+.1f} ms, p95 {s['p95_overhead_ms']:+.1f} ms.",
        "",
        NOTES.strip(),
        MARKERS[1],
    ]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else ""
    start, end = MARKERS
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of every round, with the sink up for the whole of it."""
    work = Path(tempfile.mkdtemp(prefix="lva-bench-tracing."))
    sink_cmd = [sys.executable, "-m", "loadtest.otlp_sink", "--port", str(args.sink_port)]
    sink = subprocess.Popen(
        prefix(args.gen_cpu, 0) + sink_cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs: list[dict[str, Any]] = []
    try:
        _wait_ready(f"http://127.0.0.1:{args.sink_port}/stats", sink, "OTLP sink")
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            for tracing in order:
                label = f"{i + 1}{'on' if tracing else 'off'}"
                print(f"== round {i + 1}, tracing {'on' if tracing else 'off'}", flush=True)
                runs.append(run_once(args, tracing, work, label))
                print(json.dumps(runs[-1]), flush=True)
        received = json.loads(_get(f"http://127.0.0.1:{args.sink_port}/stats"))
        print(f"collector received: {received}")
    finally:
        _stop(sink)
        shutil.rmtree(work, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        runs = json.loads(args.from_json.read_text())["runs"]
    else:
        runs = run_all(args)
    s = summary(runs)
    section = markdown(args, runs, s)
    print(section)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps({"runs": runs, "summary": s}, indent=2) + "\n")
    if args.write:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
