"""`make fuzz`: the long fuzz runs, their figures written into docs/reliability.md.

    python -m loadtest.fuzz                    # both: >= 10 000 HTTP cases, 2000 walks
    python -m loadtest.fuzz --only http --http-cases 20000
    python -m loadtest.fuzz --only ws --walks 5000 --seed 7

Each run's figures replace only its own block of docs/reliability.md (between
`<!-- fuzz-http:start -->` and `<!-- fuzz-http:end -->`, or the `fuzz-ws` markers), so the
other sections of that file (chaos, soak) are left as they are. Exits non-zero when a run
found a failure, a 5xx, an error logged by the server or anything left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest import fuzz_http, fuzz_ws

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
HTTP_MARKERS = ("<!-- fuzz-http:start -->", "<!-- fuzz-http:end -->")
WS_MARKERS = ("<!-- fuzz-ws:start -->", "<!-- fuzz-ws:end -->")


def _when() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _machine() -> str:
    return f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}"


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def http_block(result: fuzz_http.HttpFuzzResult, alive: bool) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.by_status.items()))
    lines = [
        f"Last run: {_when()}, commit `{_commit()}`, {_machine()}, seed {result.seed}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| cases sent | {result.cases} |",
        f"| operations | {result.operations} |",
        f"| duration | {result.seconds:.0f} s |",
        f"| failures (any check) | {len(result.failures)} |",
        f"| 5xx answers | {result.server_errors} |",
        f"| server answering after the run | {'yes' if alive else 'NO'} |",
        "",
        f"Answers by status: {statuses}.",
    ]
    if result.failures:
        lines += ["", "Failures (operation, mode, status, check):", ""]
        counted = Counter((f.operation, f.mode, f.status, f.check) for f in result.failures)
        lines += [f"- {n} x `{op}` {mode} {status}: {check}" for (op, mode, status, check), n
                  in counted.most_common(20)]  # fmt: skip
    return "\n".join(lines)


def ws_block(result: fuzz_ws.WsFuzzResult, steps: int) -> str:
    errors = ", ".join(f"`{c}` {n}" for c, n in sorted(result.errors_checked.items()))
    lines = [
        f"Last run: {_when()}, commit `{_commit()}`, {_machine()}, seed {result.seed}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| walks measured (after {result.warmup_walks} warm-up walks) | {result.walks} |",
        f"| of which browser / phone (all walks) | {result.browser_walks} / {result.phone_walks} |",
        f"| steps (messages and frames sent; up to {steps} a walk) | {result.steps} |",
        f"| documented errors provoked and checked | {sum(result.errors_checked.values())} |",
        f"| phone messages ignored, as counted by the server | {result.ignored_checked} |",
        f"| phone streams refused (bad, foreign or replayed token) | {result.refused_streams} |",
        f"| events checked for another session's words | {result.marked_events} |",
        f"| duration | {result.seconds:.0f} s |",
        f"| failures | {len(result.failures)} |",
        f"| errors logged by the server | {len(result.logged_errors)} |",
        f"| tasks before / after | {result.tasks_before} / {result.tasks_after} |",
        f"| file descriptors before / after | {result.fds_before} / {result.fds_after} |",
        f"| traced memory growth | {result.traced_growth_bytes / 1024:.0f} KiB |",
        f"| RSS growth | {result.rss_growth_bytes / 2**20:.1f} MiB |",
        "",
        f"Error codes checked: {errors}.",
    ]
    if result.failures or result.logged_errors:
        lines += ["", "Failures:", ""]
        lines += [f"- {f[:300]}" for f in (result.failures + result.logged_errors)[:20]]
    return "\n".join(lines)


def write_block(doc: Path, markers: tuple[str, str], body: str) -> None:
    """Replace the text between `markers` in `doc` (the rest is kept as it is)."""
    start, end = markers
    text = doc.read_text() if doc.exists() else "# Reliability\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def run_http(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="fuzz-http-") as tmp:
        with fuzz_http.fuzz_server(Path(tmp)) as url:
            result = fuzz_http.run(
                url, cases=args.http_cases, seed=args.seed, max_seconds=args.http_seconds
            )
            alive = fuzz_http.server_alive(url)
    write_block(args.doc, HTTP_MARKERS, http_block(result, alive))
    print(f"HTTP: {result.cases} cases in {result.seconds:.0f} s, "
          f"{len(result.failures)} failures, {result.server_errors} 5xx")  # fmt: skip
    for failure in result.failures[:10]:
        print(f"  {failure.operation} [{failure.mode}] {failure.status} {failure.check}\n"
              f"    {failure.curl[:300]}")  # fmt: skip
    return alive and not result.failures and result.cases >= args.http_cases


def run_ws(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="fuzz-ws-") as tmp:
        result = asyncio.run(
            fuzz_ws.campaign(Path(tmp), walks=args.walks, steps=args.steps, seed=args.seed)
        )
    write_block(args.doc, WS_MARKERS, ws_block(result, args.steps))
    failed, logged = len(result.failures), len(result.logged_errors)
    print(f"WS: {result.walks} walks, {result.steps} steps in {result.seconds:.0f} s, "
          f"{failed} failures, {logged} errors logged")  # fmt: skip
    for line in (result.failures + result.logged_errors)[:10]:
        print(f"  {line[:300]}")
    left: dict[str, Any] = {
        "tasks": result.tasks_after - result.tasks_before,
        "fds": result.fds_after - result.fds_before,
    }
    # Data kept by design (contexts, search index) is bounded; a leaked session is not.
    leaked = left["tasks"] != 0 or left["fds"] > 0
    leaked = leaked or result.traced_growth_bytes > 512 * 1024 + 2048 * result.walks
    return not (result.failures or result.logged_errors or leaked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["http", "ws"])
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--http-cases", type=int, default=10_000)
    parser.add_argument("--http-seconds", type=float, default=1800.0)
    parser.add_argument("--walks", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    ok = True
    if args.only in (None, "http"):
        ok = run_http(args) and ok
    if args.only in (None, "ws"):
        ok = run_ws(args) and ok
    print(f"figures written to {args.doc}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
