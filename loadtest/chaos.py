"""Chaos runs: faults that are not polite, each with its promised outcome measured.

    python -m loadtest.chaos                       # every scenario (`make chaos`)
    python -m loadtest.chaos redis-restart workers # some of them

Each scenario starts what it needs on loopback (the server, a private Redis, a private
PostgreSQL), injects its fault, checks the outcome, stops everything it started and writes
its figures between its markers in docs/reliability.md (`<!-- chaos:NAME:start -->`). Each
is bounded (about two minutes at most). The machine's shared Redis and PostgreSQL are never
touched. Exit status 1 if any scenario missed its promise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from loadtest.chaoskit import (
    SIMULATED,
    Conversation,
    PrivatePostgres,
    PrivateRedis,
    Server,
    context_report,
    dir_bytes,
    http_status,
    linked_phrase,
    topic_name,
    turn_phrase,
    wait_until,
    write_section,
)

Outcome = dict[str, Any]


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


async def _converse(convos: list[Conversation]) -> list[asyncio.Task[None]]:
    tasks = []
    for c in convos:
        tasks.append(asyncio.create_task(c.run()))
        await asyncio.sleep(0.02)  # a ramp, not a thundering herd of handshakes
    return tasks


async def _finish(convos: list[Conversation], tasks: list[asyncio.Task[None]]) -> None:
    for c in convos:
        c.stop = True
    await asyncio.sleep(0.5)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _turn_stats(convos: list[Conversation], t0: float, t1: float) -> dict[str, Any]:
    turns = [t for c in convos for t in c.turns if t0 <= t["at"] < t1]
    ms = sorted(t["ms"] for t in turns)
    return {
        "turns": len(turns),
        "p50_ms": round(ms[len(ms) // 2]) if ms else None,
        "max_ms": round(ms[-1]) if ms else None,
    }


def _errors(convos: list[Conversation]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in convos:
        for k, v in c.errors.items():
            out[k] = out.get(k, 0) + v
    return out


# --------------------------------------------------------------------------- Redis
async def redis_fault(work: Path, empty: bool, n: int = 50) -> Outcome:
    """N conversations with their context in a private Redis; Redis restarted (data
    kept) or killed and started empty in the middle; the conversations go on."""
    redis = PrivateRedis(work)
    redis.start()
    server = Server(
        work / "server",
        {
            "STT_PROVIDERS": "simulated",
            "TTS_PROVIDERS": "simulated",
            "LLM_PROVIDERS": "local",
            "REDIS_URL": redis.url,
            "REDIS_KEY_PREFIX": "chaos:",
            "CONTEXT_MAX_EXCHANGES": "11",
        },
    )
    try:
        server.start()
        run = uuid.uuid4().hex[:6]
        convos = [
            Conversation(server.ws, f"chaos-{run}-{i}", topic_name(i), gap_s=1.0) for i in range(n)
        ]
        tasks = await _converse(convos)
        await asyncio.sleep(14)
        fault_at = time.time()
        down = await asyncio.to_thread(redis.kill_and_start_empty if empty else redis.restart)
        back_at = time.time()
        ready_after = http_status(server.http + "/health/ready")
        await asyncio.sleep(12)
        end = time.time()
        await _finish(convos, tasks)
        alive = server.proc is not None and server.proc.poll() is None
        ctx = context_report(convos, fault_at, back_at)
        stats_before = _turn_stats(convos, fault_at - 8, fault_at)
        stats_after = _turn_stats(convos, back_at, end)
        promised = ctx["first_after_lost"] if empty else ctx["first_after_kept"]
        ok = (
            alive
            and ctx["wrong_context"] == 0
            and stats_after["turns"] >= 5 * n  # every conversation went on
            and promised >= 0.95 * n
        )
        return {
            "ok": ok,
            "conversations": n,
            "redis_down_s": round(down, 2),
            "ready_status_right_after": ready_after,
            "context": ctx,
            "turns_before": stats_before,
            "turns_after": stats_after,
            "client_errors": _errors(convos),
            "reconnects": sum(c.reconnects for c in convos),
            "server_alive": alive,
            "server_error_lines": len(server.log_lines('"level": "error"')),
            "server_warning_lines": len(server.log_lines('"level": "warning"')),
        }
    finally:
        server.stop()
        redis.kill()


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] = ("figure", "value")) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _redis_doc(name: str, r: Outcome, empty: bool) -> str:
    c, b, a = r["context"], r["turns_before"], r["turns_after"]
    n = c["first_after_kept"] + c["first_after_lost"]
    verdict = (
        "context **lost, visibly degraded**: the first reply after the fault no longer "
        "links back to the turn before it (the coach answers as to a new conversation, "
        "never with another learner's context), and the context builds up again from "
        "there; the conversations themselves go on without an error"
        if empty
        else "context **restored**: the first reply after the restart links back to the "
        "turn before the restart, as every reply did before it"
    )
    table = _table(
        [
            ("turns answered, 8 s before the fault", b["turns"]),
            ("turns answered, 12 s after it", a["turns"]),
            ("turn time p50 / max before (ms)", f"{b['p50_ms']} / {b['max_ms']}"),
            ("turn time p50 / max after (ms)", f"{a['p50_ms']} / {a['max_ms']}"),
            ("replies before the fault linking to their previous turn",
             f"{c['linked_before']} of {c['turns_before']}"),
            ("conversations whose first replies after the fault link to a turn before it",
             f"{c['first_after_kept']} of {n}"),
            ("replies linking to another conversation's topic", c["wrong_context"]),
            ("client errors, reconnects", f"{r['client_errors'] or 'none'}, {r['reconnects']}"),
            ("`/health/ready` right after", r["ready_status_right_after"]),
            ("server log lines at warning / error",
             f"{r['server_warning_lines']} / {r['server_error_lines']}"),
        ]
    )  # fmt: skip
    return f"""
**{name}** ({_stamp()}; {r["conversations"]} conversations typing a turn a second over the
voice WebSocket, embedded coach with `CONTEXT_MAX_EXCHANGES=11`, sessions in a private
Redis; Redis down {r["redis_down_s"]} s). Result: **{"pass" if r["ok"] else "FAIL"}**:
{verdict}.

{table}
"""


# ------------------------------------------------------------------------ Postgres
async def _captures(pg: PrivatePostgres, prefix: str) -> tuple[int, set[tuple[str, str]], int]:
    rows = await pg.query(
        "SELECT session_id, user_text FROM captures WHERE session_id LIKE $1", prefix + "%"
    )
    keys = [(r["session_id"], r["user_text"]) for r in rows]
    return len(keys), set(keys), len(keys) - len(set(keys))


def _completed(convos: list[Conversation]) -> set[tuple[str, str]]:
    return {(c.sid, c.text(t["k"])) for c in convos for t in c.turns}


def _mount_small_fs(path: Path, size_kb: int) -> None:
    """A tmpfs of `size_kb` at `path` (needs root): a disk that really fills (ENOSPC)."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )


def _unmount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def postgres_kill(
    work: Path, n: int = 50, journal_mb: int | None = None, small_fs_kb: int | None = None
) -> Outcome:
    """N conversations writing captures to a private Postgres, SIGKILLed for 20 s and
    started again: every answered turn's capture is stored exactly once, and the journal
    drains. With `journal_mb`, the journal's size limit is small enough to fill."""
    pg = PrivatePostgres(work)
    pg.start()
    env = {**SIMULATED, "DATABASE_URL": pg.dsn}
    if journal_mb:
        env["CAPTURE_JOURNAL_MAX_MB"] = str(journal_mb)
        env["CAPTURE_QUEUE_MAX"] = "100"
    small_fs = work / "small-disk"
    if small_fs_kb:
        _mount_small_fs(small_fs, small_fs_kb)
        env["CAPTURE_JOURNAL_DIR"] = str(small_fs / "journal")
        env["CAPTURE_QUEUE_MAX"] = "100"
    server = Server(work / "server", env)
    try:
        server.start()
        run = uuid.uuid4().hex[:6]
        prefix = f"chaos-{run}-"
        full = bool(journal_mb or small_fs_kb)
        pad = (" " + "x" * 50) * 40 if full else ""  # 2 KB turns fill a journal
        gap = 0.2 if full else 0.5
        convos = [
            Conversation(server.ws, f"{prefix}{i}", topic_name(i), gap_s=gap, pad=pad)
            for i in range(n)
        ]
        tasks = await _converse(convos)
        await asyncio.sleep(8)
        killed_at = time.time()
        await asyncio.to_thread(pg.kill)
        peak = {"backlog": 0.0, "dropped": 0.0}
        for _ in range(40):  # 20 s down
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                cap = (await asyncio.to_thread(server.admin, "/admin/api/metrics"))["capture"]
                peak["backlog"] = max(peak["backlog"], cap["capture_journal_backlog"])
                peak["dropped"] = max(peak["dropped"], cap["capture_dropped"])
        jdir = small_fs / "journal" if small_fs_kb else server.work / "journal"
        journal_bytes = dir_bytes(jdir) if jdir.exists() else None
        turns_down = _turn_stats(convos, killed_at, time.time())
        await asyncio.to_thread(pg.start)
        back = time.monotonic()
        back_at = time.time()

        def backlog() -> float:
            return server.admin("/admin/api/metrics")["capture"]["capture_journal_backlog"]

        # The journal drains while the conversations go on writing.
        drained_ok = await asyncio.to_thread(wait_until, lambda: backlog() == 0, 60, 0.1)
        drain_s = time.monotonic() - back
        await asyncio.sleep(3)  # new turns are stored again
        await _finish(convos, tasks)

        def settled() -> bool:
            cap = server.admin("/admin/api/metrics")["capture"]
            return cap["capture_journal_backlog"] == 0 and cap["capture_queue_depth"] == 0

        drained_ok = drained_ok and await asyncio.to_thread(wait_until, settled, 30, 0.1)
        await asyncio.sleep(1)
        cap = await asyncio.to_thread(server.admin, "/admin/api/metrics")
        dropped = int(cap["capture"]["capture_dropped"])
        completed = _completed(convos)
        rows, stored, dups = await _captures(pg, prefix)
        lost = completed - stored
        alive = server.proc is not None and server.proc.poll() is None
        server.stop()  # a clean stop logs the drops not yet logged
        drop_logs = server.log_lines("captures dropped")
        if full:
            ok = (
                alive
                and dups == 0
                and dropped > 0
                and len(lost) <= dropped
                and sum(int(d.get("count", 0)) for d in drop_logs) == dropped
                and drained_ok
                and not _errors(convos)
            )
        else:
            ok = alive and dups == 0 and not lost and drained_ok and dropped == 0
        # After recovery: new turns are stored again (the server recovered).
        return {
            "ok": ok,
            "conversations": n,
            "turns_answered": len(completed),
            "turns_while_down": turns_down,
            "captures_stored": rows,
            "lost": len(lost),
            "duplicated": dups,
            "dropped_counted": dropped,
            "drop_log_lines": len(drop_logs),
            "drop_logged_count": sum(int(d.get("count", 0)) for d in drop_logs),
            "other_error_lines": [
                str(d.get("msg"))[:120]
                for d in server.log_lines('"level": "')
                if d.get("level") in ("error", "critical") and d.get("msg") != "captures dropped"
            ][:5],
            "drop_reasons": sorted({d.get("reason", "") for d in drop_logs}),
            "peak_journal_backlog": int(peak["backlog"]),
            "journal_bytes_at_peak": journal_bytes,
            "drain_s": round(drain_s, 1),
            "drained": drained_ok,
            "back_at_offset_s": round(back_at - killed_at, 1),
            "client_errors": _errors(convos),
            "server_alive": alive,
        }
    finally:
        server.stop()
        pg.stop()
        if small_fs_kb:
            _unmount(small_fs)


def _pg_doc(r: Outcome) -> str:
    down = r["turns_while_down"]
    table = _table(
        [
            ("turns answered (each one's capture expected)", r["turns_answered"]),
            ("turns answered, Postgres down", f"{down['turns']} (p50 {down['p50_ms']} ms)"),
            ("captures stored after recovery", r["captures_stored"]),
            ("captures lost", f"**{r['lost']}**"),
            ("captures duplicated", f"**{r['duplicated']}**"),
            ("peak journal backlog",
             f"{r['peak_journal_backlog']} captures, {r['journal_bytes_at_peak']} bytes on disk"),
            ("time to drain the journal once Postgres was back", f"**{r['drain_s']} s**"),
            ("client errors", r["client_errors"] or "none"),
            ("server alive", r["server_alive"]),
        ]
    )  # fmt: skip
    return f"""
**Postgres SIGKILL** ({_stamp()}; {r["conversations"]} conversations typing two turns a
second over the voice WebSocket, simulated providers, captures in a private PostgreSQL;
the postmaster and every backend SIGKILLed, started again {r["back_at_offset_s"]} s later
with crash recovery; the captures matched turn by turn, by session and text). Result:
**{"pass" if r["ok"] else "FAIL"}**.

{table}
"""


def _journal_doc(r: Outcome) -> str:
    down = r["turns_while_down"]
    reasons = ", ".join(r["drop_reasons"]) or "-"
    table = _table(
        [
            ("turns answered", r["turns_answered"]),
            ("turns answered, Postgres down", f"{down['turns']} (p50 {down['p50_ms']} ms)"),
            ("captures dropped, counted (`capture_dropped`)", r["dropped_counted"]),
            ("log lines `captures dropped` (their counts add up to)",
             f"{r['drop_log_lines']} ({r['drop_logged_count']}; reason: {reasons})"),
            ("captures lost (answered, never stored)", r["lost"]),
            ("captures duplicated", r["duplicated"]),
            ("journal on disk at its peak", f"{r['journal_bytes_at_peak']} bytes"),
            ("journal drained once Postgres was back, in", f"{r['drain_s']} s"),
            ("client errors", r["client_errors"] or "none"),
            ("server alive", r["server_alive"]),
        ]
    )  # fmt: skip
    return f"""
**Journal full** ({_stamp()}; `CAPTURE_JOURNAL_MAX_MB=1`, `CAPTURE_QUEUE_MAX=100`,
{r["conversations"]} conversations typing five 2 KB turns a second; Postgres SIGKILLed
for {r["back_at_offset_s"]} s, so every capture goes to the journal until it is full).
Result: **{"pass" if r["ok"] else "FAIL"}**: every capture lost is one counted and logged
as dropped, none is stored twice, the turns go on at their usual pace, and once Postgres
takes writes again the journal drains and new captures are stored.

{table}
"""


def _disk_doc(r: Outcome) -> str:
    down = r["turns_while_down"]
    reasons = ", ".join(r["drop_reasons"]) or "-"
    table = _table(
        [
            ("turns answered", r["turns_answered"]),
            ("turns answered, Postgres down", f"{down['turns']} (p50 {down['p50_ms']} ms)"),
            ("captures dropped, counted (`capture_dropped`)", r["dropped_counted"]),
            ("log lines `captures dropped` (their counts add up to)",
             f"{r['drop_log_lines']} ({r['drop_logged_count']}; reason: {reasons})"),
            ("captures lost (answered, never stored)", r["lost"]),
            ("captures duplicated", r["duplicated"]),
            ("journal on disk at its peak", f"{r['journal_bytes_at_peak']} bytes"),
            ("journal drained once Postgres was back, in", f"{r['drain_s']} s"),
            ("other error lines in the server log", r["other_error_lines"] or "none"),
            ("client errors", r["client_errors"] or "none"),
        ]
    )  # fmt: skip
    return f"""
**The journal's disk really full** ({_stamp()}; the journal on a 512 KB tmpfs of its own,
its size limit left at the default; {r["conversations"]} conversations typing five 2 KB
turns a second; Postgres SIGKILLed for {r["back_at_offset_s"]} s). Result:
**{"pass" if r["ok"] else "FAIL"}**.

{table}
"""


# -------------------------------------------------------------------------- workers
async def worker_kill(work: Path, workers: int = 2, seconds: float = 45.0) -> Outcome:
    """`--workers N` on one port, a worker SIGKILLed every 3-6 s (every other time one
    in its first second), while the port is probed 20 times a second."""
    server = Server(work / "server", {**SIMULATED}, args=["--workers", str(workers)])
    server.start()
    assert server.proc is not None
    sup = psutil.Process(server.proc.pid)
    answers: list[tuple[float, bool]] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            answers.append(
                (time.monotonic(), http_status(server.http + "/health/ready", 1.0) == 200)
            )
            time.sleep(0.05)

    def kids() -> set[int]:
        with contextlib.suppress(psutil.Error):
            return {k.pid for k in sup.children() if k.status() != psutil.STATUS_ZOMBIE}
        return set()

    rng = random.Random(7)
    kills = early = 0
    prober = threading.Thread(target=probe, daemon=True)
    try:
        await asyncio.to_thread(wait_until, lambda: len(kids()) == workers, 60)
        prober.start()
        end = time.monotonic() + seconds
        young: int | None = None
        while time.monotonic() < end:
            if young is not None and kills % 2 == 1:
                victim = young  # in its first second: still starting
                await asyncio.sleep(0.5)
                early += 1
            else:
                await asyncio.sleep(rng.uniform(3, 6))
                victim = rng.choice(sorted(kids()))
            before = kids()
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            kills += 1
            got = await asyncio.to_thread(
                wait_until, lambda b=before, v=victim: kids() - b - {v}, 40, 0.02
            )
            young = next(iter(kids() - before - {victim}), None) if got else None
        await asyncio.to_thread(wait_until, lambda: len(kids()) == workers, 40)
        await asyncio.to_thread(wait_until, server.ready, 40)
        await asyncio.sleep(1)
    finally:
        done.set()
        prober.join(5)
        final = len(kids())
        alive = server.proc.poll() is None
        code = server.stop()
    oks = [t for t, ok in answers if ok]
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    restarts = len(server.log_lines("worker died; restarting"))
    ok = alive and final == workers and restarts == kills and code == 0 and max(gaps) < 2.0
    return {
        "ok": ok,
        "workers": workers,
        "seconds": seconds,
        "kills": kills,
        "kills_in_first_second": early,
        "restarts_logged": restarts,
        "workers_at_end": final,
        "probes": len(answers),
        "probes_failed": len(answers) - len(oks),
        "longest_gap_s": round(max(gaps), 3) if gaps else None,
        "supervisor_alive": alive,
        "exit_code_on_sigterm": code,
    }


def _workers_doc(r: Outcome) -> str:
    answered = r["probes"] - r["probes_failed"]
    table = _table(
        [
            ("workers restarted by the supervisor", f"{r['restarts_logged']} of {r['kills']}"),
            ("workers running at the end", f"{r['workers_at_end']} of {r['workers']}"),
            ("probes answered", f"{answered} of {r['probes']}"),
            ("longest time without an answer", f"{r['longest_gap_s']} s"),
            ("supervisor alive; its exit code on SIGTERM",
             f"{r['supervisor_alive']}; {r['exit_code_on_sigterm']}"),
        ]
    )  # fmt: skip
    return f"""
**One worker of `--workers {r["workers"]}` SIGKILLed** ({_stamp()}; {r["kills"]} kills in
{r["seconds"]:.0f} s, {r["kills_in_first_second"]} of them half a second after the worker
started, before it listened; `/health/ready` probed every 50 ms). Result:
**{"pass" if r["ok"] else "FAIL"}**. A failed probe is a connection the kernel had queued
on the killed worker's socket (reset); the next one lands on a live worker.

{table}
"""


# ------------------------------------------------------------------- slow provider
async def slow_provider(work: Path, n: int = 100, seconds: float = 40.0) -> Outcome:
    """Every LLM request to the first provider of the chain answers after 2-5 s (a
    wire-faithful OpenAI fake); N conversations: the chain falls back to the embedded
    coach, the loop does not stall, memory stays bounded."""
    from tests.fakes.openai import FakeOpenAI

    class SlowOpenAI(FakeOpenAI):
        @property  # type: ignore[override]
        def first_delay(self) -> float:
            return random.uniform(2.0, 5.0)

        @first_delay.setter
        def first_delay(self, value: float) -> None:
            pass

    fake = await SlowOpenAI().start()
    server = Server(
        work / "server",
        {
            "STT_PROVIDERS": "simulated",
            "TTS_PROVIDERS": "simulated",
            "LLM_PROVIDERS": "openai,local",
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url + "/v1",
        },
    )
    try:
        await asyncio.to_thread(server.start)
        pid = server.proc.pid if server.proc else 0
        proc = psutil.Process(pid)
        rss0 = proc.memory_info().rss
        run = uuid.uuid4().hex[:6]
        convos = [
            Conversation(server.ws, f"slow-{run}-{i}", topic_name(i), gap_s=1.0, turn_timeout_s=30)
            for i in range(n)
        ]
        tasks = await _converse(convos)
        lags: list[float] = []
        rss: list[int] = []
        t0 = time.time()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(2)
            with contextlib.suppress(Exception):
                sysm = await asyncio.to_thread(server.admin, "/admin/api/metrics/system")
                lags.append(sysm["event_loop_lag"]["max_ms"] or 0.0)
                rss.append(proc.memory_info().rss)
        await _finish(convos, tasks)
        m = await asyncio.to_thread(server.admin, "/admin/api/metrics")
        stats = _turn_stats(convos, t0, time.time())
        half = len(rss) // 2
        growth = (max(rss[half:]) - max(rss[:half])) / max(1, max(rss[:half])) if half else 0.0
        ok = (
            stats["turns"] >= n
            and m["providers"]["fallbacks"] > 0
            and max(lags) < 500
            and growth < 0.10
            and server.proc is not None
            and server.proc.poll() is None
        )
        return {
            "ok": ok,
            "conversations": n,
            "seconds": seconds,
            "turns": stats,
            "fallbacks": m["providers"]["fallbacks"],
            "provider_errors": m["providers"]["errors"],
            "slow_requests": fake.count("/v1/chat/completions"),
            "loop_lag_max_ms": round(max(lags), 1) if lags else None,
            "rss_start_mb": round(rss0 / 2**20, 1),
            "rss_end_mb": round(rss[-1] / 2**20, 1) if rss else None,
            "rss_growth_second_half": round(growth * 100, 1),
            "client_errors": _errors(convos),
        }
    finally:
        server.stop()
        await fake.stop()


def _slow_doc(r: Outcome) -> str:
    t = r["turns"]
    table = _table(
        [
            ("turns answered; p50 / max (ms)", f"{t['turns']}; {t['p50_ms']} / {t['max_ms']}"),
            ("fallbacks to the embedded coach", r["fallbacks"]),
            ("provider errors counted", r["provider_errors"]),
            ("requests that reached the slow provider", r["slow_requests"]),
            ("event-loop lag, worst", f"{r['loop_lag_max_ms']} ms"),
            ("RSS start / end", f"{r['rss_start_mb']} / {r['rss_end_mb']} MB"),
            ("RSS peak, second half over first half", f"{r['rss_growth_second_half']} %"),
            ("client errors", r["client_errors"] or "none"),
        ]
    )  # fmt: skip
    return f"""
**A slow provider** ({_stamp()}; `LLM_PROVIDERS=openai,local`, the OpenAI endpoint being
the wire-faithful fake of tests/fakes answering every request after 2-5 s, uniform;
{r["conversations"]} conversations typing a turn a second for {r["seconds"]:.0f} s).
Result: **{"pass" if r["ok"] else "FAIL"}**.

{table}
"""


# -------------------------------------------------------------------- slow clients
class LossyProxy:
    """A TCP proxy on loopback for a slow, lossy link: what the server sends reaches the
    client at `rate` bytes/s, each chunk `delay` s late (uniform), and one chunk in
    `loss_every` waits a further second, as a lost segment waits for its retransmission."""

    def __init__(self, upstream: int, rate: float = 48_000, delay=(0.05, 0.25), loss_every=20):
        self.upstream, self.rate, self.delay, self.loss_every = upstream, rate, delay, loss_every
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self.rng = random.Random(3)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return
        up = asyncio.create_task(self._pump(cr, sw, slow=False))
        down = asyncio.create_task(self._pump(sr, cw, slow=True))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        for w in (sw, cw):
            w.close()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, slow: bool) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(4096):
                if slow:
                    wait = self.rng.uniform(*self.delay) + len(data) / self.rate
                    if self.rng.randrange(self.loss_every) == 0:
                        wait += 1.0
                    await asyncio.sleep(wait)
                w.write(data)
                await w.drain()


async def _non_reader(port: int, sid: str, seconds: float) -> dict[str, Any]:
    """Opens the voice WebSocket with a 4 KB receive buffer, asks for spoken replies and
    never reads: the server's send queue toward it can only fill."""
    import base64
    import json as _json

    from loadtest.wire import masked_frame

    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws/{sid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode())
    await loop.sock_sendall(sock, masked_frame(1, _json.dumps({"type": "start"}).encode()))
    t0 = time.monotonic()
    closed_after = None
    k = 0
    while time.monotonic() - t0 < seconds:
        try:
            text = _json.dumps({"type": "text", "text": f"Tell me a long story number {k}"})
            await asyncio.wait_for(loop.sock_sendall(sock, masked_frame(1, text.encode())), 2)
        except (OSError, TimeoutError):
            closed_after = time.monotonic() - t0  # reset by the server
            break
        k += 1
        await asyncio.sleep(1.0)
    # Now read what is left: the server's close frame (4408) if it got through, or EOF.
    code = None
    with contextlib.suppress(Exception):
        data = b""
        async with asyncio.timeout(3):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
        idx = data.rfind(b"\x88\x02")  # an unmasked close frame with a 2-byte code
        if idx >= 0:
            code = int.from_bytes(data[idx + 2 : idx + 4], "big")
    sock.close()
    return {"closed_after_s": closed_after, "close_code": code, "turns_sent": k}


async def slow_clients(work: Path, normal: int = 40, stalled: int = 10, lossy: int = 10) -> Outcome:
    """`normal` conversations, then `stalled` clients that never read and `lossy` ones on
    a slow lossy link join: bounded queues hold, the stalled ones are closed 4408 as
    docs/protocol.md says, the slow ones go on, and the normal ones do not notice."""
    server = Server(work / "server", {**SIMULATED})
    proxy = None
    try:
        await asyncio.to_thread(server.start)
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        run = uuid.uuid4().hex[:6]
        convos = [
            Conversation(server.ws, f"norm-{run}-{i}", topic_name(i), gap_s=1.0)
            for i in range(normal)
        ]
        tasks = await _converse(convos)
        await asyncio.sleep(12)
        t_join = time.time()
        rss_before = proc.memory_info().rss
        proxy = LossyProxy(server.port)
        await proxy.start()
        slow = [
            Conversation(f"ws://127.0.0.1:{proxy.port}", f"lossy-{run}-{i}", topic_name(100 + i),
                         gap_s=1.0, tts=True, turn_timeout_s=60)
            for i in range(lossy)
        ]  # fmt: skip
        slow_tasks = await _converse(slow)
        stalled_runs = [
            asyncio.create_task(_non_reader(server.port, f"stall-{run}-{i}", 35.0))
            for i in range(stalled)
        ]
        rss_peak = rss_before
        while not all(t.done() for t in stalled_runs):
            await asyncio.sleep(1)
            rss_peak = max(rss_peak, proc.memory_info().rss)
        stalled_out = [t.result() for t in stalled_runs]
        t_end = time.time()
        await _finish(convos + slow, tasks + slow_tasks)
        closes = server.log_lines("client not reading")
        alive = server.proc.poll() is None
        base = _turn_stats(convos, t_join - 10, t_join)
        during = _turn_stats(convos, t_join, t_end)
        slow_stats = _turn_stats(slow, t_join, t_end)
        closed = [s for s in stalled_out if s["close_code"] == 4408 or s["closed_after_s"]]
        ok = (
            alive
            and len(closes) >= stalled
            and len(closed) == stalled
            and slow_stats["turns"] >= lossy * 5
            and during["turns"] >= normal * 15
            and (during["p50_ms"] or 0) <= 3 * max(1, base["p50_ms"] or 1) + 50
            and not _errors(convos)
        )
        return {
            "ok": ok,
            "normal": normal,
            "stalled": stalled,
            "lossy": lossy,
            "normal_before": base,
            "normal_during": during,
            "normal_errors": _errors(convos),
            "lossy_turns": slow_stats,
            "lossy_errors": _errors(slow),
            "lossy_reconnects": sum(c.reconnects for c in slow),
            "stalled_closed_4408_logged": len(closes),
            "stalled_dropped_events": sum(int(c.get("dropped_events", 0)) for c in closes),
            "stalled_close_codes": sorted({str(s["close_code"]) for s in stalled_out}),
            "stalled_reset_after_s": sorted(
                round(s["closed_after_s"]) for s in stalled_out if s["closed_after_s"]
            ),
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "server_alive": alive,
        }
    finally:
        if proxy is not None:
            await proxy.stop()
        server.stop()


def _clients_doc(r: Outcome) -> str:
    b, d, s = r["normal_before"], r["normal_during"], r["lossy_turns"]
    table = _table(
        [
            ("normal turn time p50 / max, before (ms)", f"{b['p50_ms']} / {b['max_ms']}"),
            ("normal turn time p50 / max, while the others ran (ms)",
             f"{d['p50_ms']} / {d['max_ms']}"),
            ("normal turns answered while the others ran, errors",
             f"{d['turns']}, {r['normal_errors'] or 'none'}"),
            ("non-readers closed `4408 client not reading` (server log)",
             f"{r['stalled_closed_4408_logged']} of {r['stalled']}"),
            ("events dropped from their queues (logged)", r["stalled_dropped_events"]),
            ("close frames the non-readers found (None: the frame could not get through)",
             ", ".join(r["stalled_close_codes"])),
            ("non-readers' connection reset after (s, each)",
             ", ".join(map(str, r["stalled_reset_after_s"])) or "-"),
            ("lossy-link turns answered; p50 / max (ms)",
             f"{s['turns']}; {s['p50_ms']} / {s['max_ms']}"),
            ("lossy-link errors, reconnects",
             f"{r['lossy_errors'] or 'none'}, {r['lossy_reconnects']}"),
            ("server RSS before / peak", f"{r['rss_before_mb']} / {r['rss_peak_mb']} MB"),
        ]
    )  # fmt: skip
    return f"""
**Clients that stop reading, and clients on a slow lossy link** ({_stamp()};
{r["normal"]} conversations typing a turn a second; then {r["stalled"]} clients with a 4 KB
receive buffer asking for spoken replies and never reading, and {r["lossy"]} conversations
with spoken replies through a loopback proxy that delivers 48 KB/s, each chunk 50-250 ms
late and one in twenty a second later still). Result: **{"pass" if r["ok"] else "FAIL"}**.
The non-readers' bounded send queues fill, the watchdog closes them 4408 as
docs/protocol.md says (10 s without progress, checked every 5 s), the lossy ones go on
(slower), and the normal conversations keep their pace.

{table}
"""


# ------------------------------------------------------------------ instance kill
async def instance_kill(work: Path, n: int = 50) -> Outcome:
    """Instances A and B share a private Redis, Postgres and journal directory. Postgres
    is SIGKILLed, so both journal every capture; A is SIGKILLed with its journal full of
    them; its callers reconnect to B and keep their context. Postgres comes back, and a
    new instance started in A's place adopts A's orphaned journal slot and drains it:
    every answered turn stored exactly once."""
    redis = PrivateRedis(work)
    redis.start()
    pg = PrivatePostgres(work)
    pg.start()
    journal = work / "journal"
    env = {
        **SIMULATED,
        "LLM_PROVIDERS": "local",
        "CONTEXT_MAX_EXCHANGES": "11",
        "REDIS_URL": redis.url,
        "REDIS_KEY_PREFIX": "chaos:",
        "DATABASE_URL": pg.dsn,
        "CAPTURE_JOURNAL_DIR": str(journal),
        "AUTH_SECRET": uuid.uuid4().hex * 2,  # one learner, whichever instance answers
    }
    a = Server(work / "a", env)
    b = Server(work / "b", env)
    a2: Server | None = None
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        run = uuid.uuid4().hex[:6]
        prefix = f"inst-{run}-"
        convos = [
            Conversation(
                (a if i % 2 == 0 else b).ws, f"{prefix}{i}", topic_name(i), gap_s=1.0,
                others=((b if i % 2 == 0 else a).ws,),
            )
            for i in range(n)
        ]  # fmt: skip
        tasks = await _converse(convos)
        await asyncio.sleep(8)
        await asyncio.to_thread(pg.kill)
        await asyncio.sleep(8)  # both instances journal
        a_backlog = (await asyncio.to_thread(a.admin, "/admin/api/metrics"))["capture"][
            "capture_journal_backlog"
        ]
        killed_at = time.time()
        a.kill()
        await asyncio.sleep(12)  # A's callers are on B now
        await asyncio.to_thread(pg.start)
        pg_back = time.monotonic()
        pg_back_after = time.time() - killed_at
        await asyncio.sleep(4)
        await _finish(convos, tasks)
        a2 = Server(work / "a2", env)
        await asyncio.to_thread(a2.start)

        def settled() -> bool:
            return all(
                s.admin("/admin/api/metrics")["capture"]["capture_journal_backlog"] == 0
                for s in (b, a2)
            )

        drained = await asyncio.to_thread(wait_until, settled, 60, 0.2)
        drain_s = time.monotonic() - pg_back
        await asyncio.sleep(2)
        left = sorted(p.name for p in journal.rglob("*") if p.is_file() and p.stat().st_size)
        completed = _completed(convos)
        rows, stored, dups = await _captures(pg, prefix)
        lost = completed - stored
        moved = [c for c in convos if c.reconnects]
        kept = fresh = 0
        resumed: list[float] = []
        for c in moved:
            first = next((t for t in c.turns if t["at"] > killed_at and t["k"] > 0), None)
            if first is None:
                continue
            resumed.append(first["at"] - killed_at)
            prev = max((t["k"] for t in c.turns if t["at"] < killed_at), default=-1)
            # The turn in flight at the kill may have been remembered without its reply.
            link = linked_phrase(first["reply"])
            ok_link = link in (turn_phrase(c.topic, prev), turn_phrase(c.topic, prev + 1))
            kept += ok_link
            fresh += not ok_link
        ok = drained and not lost and dups == 0 and kept >= 0.9 * len(moved) and a_backlog > 0
        return {
            "ok": ok,
            "conversations": n,
            "moved_to_b": len(moved),
            "moved_kept_context": kept,
            "moved_lost_context": fresh,
            "pg_back_after_kill_s": round(pg_back_after, 1),
            "resumed_after_s": [round(min(resumed), 1), round(max(resumed), 1)]
            if resumed
            else None,
            "a_journal_backlog_at_kill": int(a_backlog),
            "turns_answered": len(completed),
            "captures_stored": rows,
            "lost": len(lost),
            "duplicated": dups,
            "drained": drained,
            "drain_s_after_pg_back": round(drain_s, 1),
            "journal_files_left": left,
            "client_errors": _errors(convos),
        }
    finally:
        for s in (a, b, a2):
            if s is not None:
                s.stop()
        pg.stop()
        redis.kill()


def _instance_doc(r: Outcome) -> str:
    table = _table(
        [
            ("callers of A reconnected to B", r["moved_to_b"]),
            ("their first turn answered on B, after A's kill (min / max)",
             " / ".join(f"{x} s" for x in r["resumed_after_s"] or [])),
            ("Postgres back, after A's kill", f"{r['pg_back_after_kill_s']} s"),
            ("their first reply on B linking to their last turn on A",
             f"{r['moved_kept_context']} of {r['moved_to_b']}"),
            ("captures in A's journal when it was killed", r["a_journal_backlog_at_kill"]),
            ("turns answered (each one's capture expected)", r["turns_answered"]),
            ("captures stored", r["captures_stored"]),
            ("captures lost", f"**{r['lost']}**"),
            ("captures duplicated", f"**{r['duplicated']}**"),
            ("journals drained (B's own, A's by its replacement), after Postgres came back",
             f"{r['drain_s_after_pg_back']} s"),
            ("journal files left", len(r["journal_files_left"])),
        ]
    )  # fmt: skip
    return f"""
**One of two instances SIGKILLed** ({_stamp()}; instances A and B share a private Redis,
a private Postgres and one journal directory; {r["conversations"]} conversations, half on
each; Postgres SIGKILLed so both journal every capture, then A SIGKILLed; A's callers
reconnect to B; Postgres started again, then a new instance in A's place, which adopts
A's orphaned journal slot). Result: **{"pass" if r["ok"] else "FAIL"}**. While Postgres
was down, B refused A's callers with `storage_unavailable` (close 4503, as
docs/protocol.md says: a session with context whose owner cannot be checked); they kept
retrying and resumed, with their context from Redis, as soon as Postgres was back. Client
errors counted along the way: {r["client_errors"] or "none"}.

{table}
"""


# ------------------------------------------------------------ SQLite, N workers
BREAD = (
    "sourdough starter feeding schedule",
    "kneading a baguette dough by hand",
    "proofing rye loaves overnight in the fridge",
    "baking focaccia with olive oil and rosemary",
    "shaping brioche rolls for breakfast",
)


def _post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


async def sqlite_workers(work: Path, workers: int = 2, rounds: int = 5) -> Outcome:
    """`--workers N` on one SQLite file: a capture written through one worker (a typed
    turn) is searched by meaning over fresh connections, which the kernel spreads over
    every worker, until all of them find it."""
    server = Server(
        work / "server",
        {**SIMULATED, "LLM_PROVIDERS": "local", "AUTH_SECRET": uuid.uuid4().hex * 2,
         "SEARCH_PER_MINUTE": "100000", "CONVERSATION_PER_MINUTE": "100000",
         "HTTP_PER_MINUTE_PER_ADDRESS": "1000000", "HTTP_PER_MINUTE_PER_LEARNER": "1000000"},
        args=["--workers", str(workers)],
    )  # fmt: skip
    try:
        await asyncio.to_thread(server.start)
        status, body = await asyncio.to_thread(_post, server.http + "/api/learners", {})
        token = body["learner_token"]
        query = {"query": "cooking bread at home", "limit": 10}
        search = server.http + "/api/search"
        for _ in range(20):  # every worker loads its index and caches this query
            await asyncio.to_thread(_post, search, query, token)
        run = uuid.uuid4().hex[:6]
        found_after: list[float] = []
        searches = misses = 0
        why: dict[str, int] = {}
        for r in range(rounds):
            sid = f"sq-{run}-{r}"
            text = BREAD[r % len(BREAD)]
            status, _ = await asyncio.to_thread(
                _post, server.http + "/api/conversation", {"session_id": sid, "text": text}, token
            )
            if status != 200:
                raise RuntimeError(f"typed turn refused: {status}")
            t0 = time.monotonic()
            streak, last_miss = 0, 0.0
            while streak < 20 and time.monotonic() - t0 < 10:  # 20 answers in a row
                status, body = await asyncio.to_thread(_post, search, query, token)
                searches += 1
                hit = status == 200 and any(h["session_id"] == sid for h in body["results"])
                if hit:
                    streak += 1
                else:
                    streak, last_miss = 0, time.monotonic() - t0
                    misses += 1
                    why[str(status)] = why.get(str(status), 0) + 1
                await asyncio.sleep(0.02)
            found_after.append(round(last_miss, 3) if streak >= 20 else float("inf"))
        ok = all(f < 1.0 for f in found_after)
        return {
            "ok": ok,
            "workers": workers,
            "rounds": rounds,
            "found_by_all_after_s": found_after,
            "searches": searches,
            "misses": misses,
            "miss_statuses": why,
        }
    finally:
        server.stop()


def _sqlite_doc(r: Outcome) -> str:
    worst = max(r["found_by_all_after_s"])
    return f"""
**Several workers on SQLite** ({_stamp()}; `--workers {r["workers"]}` on one SQLite file;
{r["rounds"]} rounds: a typed turn about bread written through whichever worker took it,
then "cooking bread at home" searched over a new connection every 20 ms (the kernel
spreads them over the workers, each of which had searched before and cached the answer)
until 20 answers in a row found the new capture, which shares no word with the query;
the HTTP, search and typed-turn limits raised for the one learner and address).
Result: **{"pass" if r["ok"] else "FAIL"}**: the last search that missed it came
{", ".join(f"{x} s" for x in r["found_by_all_after_s"])} after the turn was answered
(worst {worst} s; this includes the writer's flush and its embedding), {r["misses"]} misses
in {r["searches"]} searches.
"""


# ----------------------------------------------------------------- the scenarios
SCENARIOS: dict[str, tuple[Callable[[Path], Awaitable[Outcome]], Callable[[Outcome], str]]] = {
    "workers": (worker_kill, _workers_doc),
    "redis-restart": (
        lambda w: redis_fault(w, empty=False),
        lambda r: _redis_doc("Redis restarted (data kept)", r, empty=False),
    ),
    "redis-empty": (
        lambda w: redis_fault(w, empty=True),
        lambda r: _redis_doc("Redis killed and started empty", r, empty=True),
    ),
    "postgres-kill": (postgres_kill, _pg_doc),
    "journal-full": (lambda w: postgres_kill(w, n=50, journal_mb=1), _journal_doc),
    "disk-full": (lambda w: postgres_kill(w, n=50, small_fs_kb=512), _disk_doc),
    "slow-provider": (slow_provider, _slow_doc),
    "slow-clients": (slow_clients, _clients_doc),
    "instance-kill": (instance_kill, _instance_doc),
    "sqlite-workers": (sqlite_workers, _sqlite_doc),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__)
    p.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    p.add_argument("--no-doc", action="store_true", help="print, do not write the doc")
    args = p.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    failed = []
    for name in names:
        run, doc = SCENARIOS[name]
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"lva-chaos-{name}-") as tmp:
            try:
                outcome = asyncio.run(run(Path(tmp)))
            except Exception as exc:  # a scenario that cannot run is a failure, not a crash
                outcome = {"ok": False, "error": repr(exc)[:2000]}
        outcome["wall_s"] = round(time.monotonic() - t0, 1)
        print(name, outcome, flush=True)
        if not outcome["ok"]:
            failed.append(name)
        if not args.no_doc and "error" not in outcome:
            write_section(f"chaos:{name}", doc(outcome) + f"\nRun took {outcome['wall_s']} s.")
    print("FAILED: " + ", ".join(failed) if failed else "all scenarios kept their promise")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
