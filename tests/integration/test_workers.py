"""Scale-out: two instances on two ports sharing Redis and Postgres carry one conversation
between them, and `python -m server --workers 2` serves one port from two processes with
`/metrics` summed over both.

Real processes, real Redis (own key prefix, deleted after) and a throwaway Postgres
database; the LLM is the embedded learning coach, whose reply mentions what the user said
earlier, so a reply on the second instance shows it had the first instance's context.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import redis
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_storage_pg_support import temp_database
from tests.server_process import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = "workers-admin-key"
FAST = {"STT_PROVIDERS": "simulated", "TTS_PROVIDERS": "simulated", "LOG_LEVEL": "warning"}


def _drop_keys(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)


async def _ws_text_turn(base_ws: str, session_id: str, text: str, token: str) -> str:
    async with websockets.connect(f"{base_ws}/ws/{session_id}?token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "start", "tts": False}))
        await ws.send(json.dumps({"type": "text", "text": text}))
        async with asyncio.timeout(10):
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "response_done":
                    return msg["text"]


async def _ws_end(base_ws: str, session_id: str, token: str) -> str:
    async with websockets.connect(f"{base_ws}/ws/{session_id}?token={token}") as ws:
        await ws.recv()  # ready
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(10):
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "summary":
                    return msg["text"]


async def test_conversation_moves_between_instances(tmp_path: Path) -> None:
    prefix = f"lva-test-{uuid.uuid4().hex[:8]}:"
    sid = f"moving-{uuid.uuid4().hex[:8]}"
    async with temp_database() as dsn:
        env = {**FAST, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, "DATABASE_URL": dsn}
        # Instances share the secret that signs learner tokens (one learner, both sides).
        env["AUTH_SECRET"] = uuid.uuid4().hex * 2
        a = ServerProcess(tmp_path / "a", env=env)
        b = ServerProcess(tmp_path / "b", env=env)
        for s in (a, b):
            s.tmp.mkdir()
        try:
            a.start()
            b.start()
            # Turn 1 on instance A, over the voice WebSocket (typed turn).
            token = a.learner()
            mine = {"Authorization": f"Bearer {token}"}
            first = await _ws_text_turn(
                a.ws, sid, "I am learning about photosynthesis today", token
            )
            assert "photosynthesis" in first.lower()
            # Turn 2 on instance B, over HTTP: the coach links it to turn 1 from A.
            status, body = b.post_json(
                "/api/conversation",
                {"session_id": sid, "text": "Mitochondria release energy from glucose"},
                mine,
            )
            assert status == 200, body
            assert "which you mentioned earlier" in body["agent_text"]
            assert "photosynthesis" in body["agent_text"].lower()
            # Back on A: the recap covers both instances' turns.
            summary = await _ws_end(a.ws, sid, token)
            assert "photosynthesis" in summary.lower() and "mitochondria" in summary.lower()
            # Both turns' captures are in the shared Postgres, visible from either side.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status, hist = b.get_json(f"/api/sessions/{sid}/history", mine)
                if status == 200 and hist["count"] >= 2:
                    break
                await asyncio.sleep(0.2)
            texts = " ".join(c["user_text"] for c in hist["captures"]).lower()
            assert "photosynthesis" in texts and "mitochondria" in texts
        finally:
            b.stop()
            a.stop()
            _drop_keys(prefix)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def test_workers_share_the_port_and_the_metrics(tmp_path: Path) -> None:
    port = free_port()
    mp_dir = tmp_path / "prom"
    env = {
        **os.environ,
        **FAST,
        "LLM_PROVIDERS": "simulated",
        "ADMIN_API_KEY": KEY,
        "DATABASE_PATH": str(tmp_path / "c.db"),
        "PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
        "REDIS_URL": "",
    }
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    kids: list[psutil.Process] = []
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                _, body = _get(base + "/admin/api/metrics", {"X-Admin-Key": KEY})
                pids.add(json.loads(body)["pid"])
            except OSError:
                time.sleep(0.2)
        assert len(pids) == 2, pids  # the kernel spread new connections over both
        kids = psutil.Process(proc.pid).children()
        assert pids == {k.pid for k in kids}
        for _ in range(20):
            assert _get(base + "/")[0] == 200
        _, text = _get(base + "/metrics")
        total = sum(
            s.value
            for fam in text_string_to_metric_families(text.decode())
            for s in fam.samples
            if s.name == "lva_http_requests_total" and s.labels.get("route") == "/"
        )
        assert total == 20  # whichever worker answered the scrape, it counts both
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0  # a clean stop of both workers
    assert kids and not any(k.is_running() for k in kids)


def _children(pid: int) -> set[int]:
    """The live worker processes (one killed a moment ago may be gone between the listing
    and its status: it is not one)."""
    alive = set()
    for kid in psutil.Process(pid).children():
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                alive.add(kid.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_worker_killed_in_its_first_seconds_is_restarted(tmp_path: Path) -> None:
    """SIGKILL a worker 0.3 s after its start, three times in a row, then an older one:
    the supervisor starts a new one each time (after a growing delay for the early
    deaths) and the port answers throughout from the surviving worker."""
    import threading

    port = free_port()
    env = {
        **os.environ,
        **FAST,
        "LLM_PROVIDERS": "simulated",
        "DATABASE_PATH": str(tmp_path / "c.db"),
        "REDIS_URL": "",
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[float, bool]] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            try:
                ok = _get(base + "/health/ready")[0] == 200
            except OSError:
                ok = False
            answers.append((time.monotonic(), ok))
            time.sleep(0.05)

    def wait_for(pred, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError((tmp_path / "server.log").read_text()[-3000:])

    def newcomer(old: set[int]) -> set[int]:
        return wait_for(lambda: _children(proc.pid) - old, timeout=30)

    def answered() -> bool:
        try:
            return _get(base + "/health/ready")[0] == 200
        except OSError:
            return False

    prober = threading.Thread(target=probe, daemon=True)
    try:
        first = wait_for(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid))
        wait_for(answered)
        prober.start()
        seen = set(first)
        survivor, victim = sorted(first)
        for _ in range(3):
            os.kill(victim, signal.SIGKILL)
            (victim,) = newcomer(seen | {victim})
            seen.add(victim)
            time.sleep(0.3)  # in its first seconds: still importing, not yet listening
        os.kill(victim, signal.SIGKILL)
        (victim,) = newcomer(seen | {victim})
        time.sleep(3)
        os.kill(survivor, signal.SIGKILL)  # the older one: restarted at once
        wait_for(lambda: len(_children(proc.pid) - {survivor}) == 2, timeout=30)
        wait_for(lambda: len(_children(proc.pid) - seen - {survivor}) == 2, timeout=30)
        time.sleep(0.5)
    finally:
        done.set()
        if prober.is_alive():
            prober.join(5)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
    text = (tmp_path / "server.log").read_text()
    assert text.count("worker died; restarting") == 5
    oks = [t for t, ok in answers if ok]
    assert len(answers) > 20 and oks
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    # The port answered throughout: never more than a second without an answer.
    assert max(gaps) < 1.0, max(gaps)
