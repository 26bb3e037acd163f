"""Markdown tables from voice load reports (the JSON `voice_load` writes).

python -m loadtest.report run.json [more.json ...]   # prints one table per run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _trio(d: dict[str, Any]) -> str:
    return " / ".join(_f(d.get(k)) for k in ("p50", "p95", "p99"))


HEADER = (
    "| N | server CPU (cores) | sessions per core | latency p50 / p95 / p99 (ms) "
    "| overhead p50 / p95 / p99 (ms) | overhead incl. VAD hangover p95 (ms) | underruns "
    "| errors, disconnects, no reply | RSS per session (KB) | send pacing p99 (ms) | result |\n"
    "|---:|---:|---:|---|---|---:|---:|---|---:|---:|---|\n"
)


def row(s: dict[str, Any]) -> str:
    srv = s.get("server", {})
    trouble = sum(s["errors"].values()) if s["errors"] else 0
    return (
        f"| {s['callers']} | {_f(srv.get('cpu_cores'), 2)} | {_f(srv.get('sessions_per_core'), 0)} "
        f"| {_trio(s['latency_ms'])} | {_trio(s['overhead_ms'])} "
        f"| {_f(s['overhead_raw_ms'].get('p95'))} | {s['underruns']} "
        f"| {trouble}, {s['disconnects']}, {s['no_reply']} "
        f"| {_f(srv.get('rss_per_session_kb'), 0)} | {_f(s['pacing_ms'].get('p99'))} "
        f"| {'pass' if s['pass'] else 'FAIL: ' + '; '.join(s['fail_reasons'])} |\n"
    )


def markdown(report: dict[str, Any]) -> str:
    sc = report["script"]
    lines = [
        f"### {report.get('label') or 'voice load'} ({report['started']})\n\n",
        f"Floor {report['floor_ms']:.0f} ms; webrtcvad hangover on the fixture "
        f"{sc['vad_hangover_ms']} ms (mode {sc['vad_mode']}), subtracted in *overhead*; "
        f"{sc['speech_s']:.2f} s speech + {sc['silence_s']:.1f} s silence per turn; "
        f"server RSS before the ramp {_f(report.get('server_baseline_rss_mb'))} MB.\n\n",
        HEADER,
    ]
    lines += [row(s) for s in report["steps"]]
    lines.append(
        f"\nMost callers holding p95 overhead <= {report['target_p95_ms']:.0f} ms with no "
        f"underruns or errors: **{report['max_passing_callers']}**.\n"
    )
    if report.get("stopped"):
        lines.append(f"Ramp stopped: {report['stopped']}.\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    for path in paths:
        print(markdown(json.loads(Path(path).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
