"""docs/runbook.md is the operator's contract: every `curl` in it runs against a real
server started here (the production URL replaced by the local one, the key by a test key)
and must answer 2xx (or the status a `# expect: NNN` comment above it names) with a body
that makes sense for that route. The SQLite, Redis and scaling recipes are run too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
PROD = "https://api.yourdomain.com"
KEY = "runbook-admin-key-0123"
TOKEN = "runbook-metrics-token-0123"


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def commands(block: str) -> list[tuple[str, int | None]]:
    """Commands of a block, continuation lines joined, each with its `# expect:` status."""
    out: list[tuple[str, int | None]] = []
    expect: int | None = None
    pending = ""
    for line in block.splitlines():
        stripped = line.strip()
        if not pending:
            m = re.match(r"#\s*expect:\s*(\d{3})", stripped)
            if m:
                expect = int(m.group(1))
                continue
            if not stripped or stripped.startswith("#"):
                continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((pending + stripped, expect))
        pending, expect = "", None
    return out


def all_commands() -> list[tuple[str, int | None]]:
    return [c for b in shell_blocks(RUNBOOK.read_text()) for c in commands(b)]


def curl_commands() -> list[tuple[str, int | None]]:
    return [(c, e) for c, e in all_commands() if c.startswith("curl ")]


def _path_of(cmd: str) -> str:
    m = re.search(re.escape(PROD) + r"(/[^\s\"']*)?", cmd)
    assert m, f"no production URL in: {cmd}"
    return m.group(1) or "/"


def _check_body(path: str, method: str, body: bytes) -> None:
    """What each route's answer must contain to count as a sensible answer."""
    route = path.split("?")[0]
    if route == "/metrics":
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"lva_http_requests", "lva_http_request_duration_seconds"} <= names, names
        return
    data = json.loads(body)
    assert isinstance(data, dict), data
    if route == "/":
        assert data["status"] == "healthy"
    elif route == "/health/ready":
        assert data["status"] == "ready"
    elif route == "/admin/api/health/detailed":
        assert data["status"] in ("healthy", "degraded")
        assert {"database", "session_store", "capture_writer", "providers"} <= set(data["checks"])
        assert data["checks"]["database"]["status"] == "healthy"
    elif route == "/admin/api/metrics":
        assert data["requests"]["total"] >= 1
        assert data["voice"]["turns"] >= 1
        assert data["requests"]["latency_ms"]["p95"] > 0
    elif route == "/admin/api/metrics/endpoints":
        routes = {e["route"] for e in data["endpoints"]}
        assert "/api/conversation" in routes, routes
    elif route == "/admin/api/metrics/system":
        assert data["memory"]["rss_bytes"] > 0
        assert data["event_loop_lag"]["samples"] >= 1
    elif route == "/admin/api/metrics/errors":
        assert isinstance(data["errors"], list)
    elif route == "/admin/api/maintenance":
        assert isinstance(data["enabled"], bool)
    elif route == "/api/stats":
        assert data["total_captures"] >= 1
    elif route == "/admin/api/search":
        assert data["count"] >= 1 and data["results"][0]["user_text"]
    else:
        raise AssertionError(f"the runbook curls {route}: add what a sensible answer is")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("runbook")
    env = {"ADMIN_API_KEY": KEY, "METRICS_TOKEN": TOKEN, "REDIS_URL": "", "DATABASE_URL": ""}
    proc = ServerProcess(tmp, env=env).start()
    # Real traffic first, so that stats, search and metrics have something to show.
    status, _ = proc.post_json(
        "/api/conversation", {"text": "Today I learned a test about spaced repetition"}
    )
    assert status == 200
    asyncio.run(_ws_text_turn(proc, "I am learning how spaced repetition schedules reviews"))
    time.sleep(0.5)  # captures are written in batches (CAPTURE_FLUSH_MS)
    yield proc
    proc.stop()


async def _ws_text_turn(server: ServerProcess, text: str) -> None:
    """One typed turn over the WebSocket, so voice-turn metrics have a value."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.ws}/ws/runbook-session") as ws:
            await ws.send_json({"type": "start", "tts": False})
            await ws.send_json({"type": "text", "text": text})
            async with asyncio.timeout(30):
                async for msg in ws:
                    if json.loads(msg.data)["type"] == "response_done":
                        break
            await ws.send_json({"type": "end"})
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass


def _env(server: ServerProcess) -> dict[str, str]:
    return {**os.environ, "ADMIN_API_KEY": KEY, "METRICS_TOKEN": TOKEN}


def test_runbook_has_the_commands_an_operator_needs() -> None:
    paths = {_path_of(c) for c, _ in curl_commands()}
    for needed in (
        "/",
        "/admin/api/health/detailed",
        "/admin/api/metrics",
        "/admin/api/metrics/endpoints",
        "/admin/api/metrics/system",
        "/admin/api/metrics/errors?limit=50",
        "/admin/api/maintenance",
        "/metrics",
        "/api/stats",
        "/admin/api/search",
    ):
        assert needed in paths, needed
    text = RUNBOOK.read_text()
    for section in ("Health", "Logs", "Scaling", "Database", "Redis", "Troubleshooting",
                    "Incident", "Maintenance", "Load Testing"):  # fmt: skip
        assert re.search(rf"^#+ .*{section}", text, flags=re.M), section
    assert "FastAPI" not in text
    assert "locust -f loadtest/locustfile.py" in text


def test_every_curl_in_the_runbook(server: ServerProcess) -> None:
    ran = 0
    for cmd, expect in curl_commands():
        local = cmd.replace(PROD, server.http)
        if "|" in local:
            assert "grep -i x-request-id" in local, f"an unchecked pipe: {cmd}"
            continue  # checked by test_piped_curl_shows_the_request_id
        # Body to stdout, then the status on a line of its own.
        argv = ["bash", "-c", local + " -sS -w '\\n%{http_code}'"]
        done = subprocess.run(argv, capture_output=True, env=_env(server), timeout=30)
        assert done.returncode == 0, (cmd, done.stderr.decode())
        body, _, code = done.stdout.rpartition(b"\n")
        status = int(code)
        method = "POST" if "-X POST" in cmd else "GET"
        path = _path_of(cmd)
        if expect is not None:
            assert status == expect, (cmd, status, body[:300])
            if expect == 503:
                assert json.loads(body)["error"]["code"] == "maintenance"
        else:
            assert 200 <= status < 300, (cmd, status, body[:500])
            _check_body(path, method, body)
        ran += 1
    assert ran >= 20
    # The maintenance section switched it on and off again: it must be off now.
    status, data = server.get_json("/admin/api/maintenance", {"X-Admin-Key": KEY})
    assert data["enabled"] is False


def test_piped_curl_shows_the_request_id(server: ServerProcess) -> None:
    piped = [c for c, _ in curl_commands() if "grep -i x-request-id" in c]
    assert piped
    for cmd in piped:
        done = subprocess.run(["bash", "-c", cmd.replace(PROD, server.http)],
                              capture_output=True, env=_env(server), timeout=30)  # fmt: skip
        assert done.returncode == 0
        assert re.match(rb"(?i)x-request-id: [0-9a-f]{32}\r?$", done.stdout.strip())


def test_wrong_key_in_runbook_commands_is_refused(server: ServerProcess) -> None:
    cmd = next(c for c, _ in curl_commands() if "/admin/api/metrics/system" in c)
    env = {**_env(server), "ADMIN_API_KEY": "not-the-key"}
    local = cmd.replace(PROD, server.http) + " -sS -w '\\n%{http_code}'"
    done = subprocess.run(["bash", "-c", local], capture_output=True, env=env, timeout=30)
    assert done.stdout.rsplit(b"\n", 1)[1] == b"401"


def test_sqlite_backup_recipe(server: ServerProcess) -> None:
    sqlite = [c for c, _ in all_commands() if c.startswith("sqlite3 ")]
    assert len(sqlite) >= 2
    for cmd in sqlite:
        cmd = cmd.split("  #")[0]  # the reference table's trailing comments
        done = subprocess.run(["bash", "-c", cmd], cwd=server.tmp, capture_output=True, timeout=30)
        assert done.returncode == 0, (cmd, done.stderr)
    backups = list(server.tmp.glob("backup_*.db"))
    assert len(backups) == 1
    count = subprocess.run(["sqlite3", str(backups[0]), "SELECT count(*) FROM captures"],
                           capture_output=True, check=True)  # fmt: skip
    assert int(count.stdout) >= 1


def test_redis_recipes_against_a_real_redis(tmp_path: Path) -> None:
    """Read-only commands against the real Redis; the destructive one on a database of its
    own, after checking it holds only the keys this test put there."""
    url = "redis://127.0.0.1:6379/14"
    redis = [
        c
        for c, _ in all_commands()
        if c.startswith("redis-cli ") and c != 'redis-cli -u "$REDIS_URL"'
    ]
    env = {**os.environ, "REDIS_URL": url}

    def sh(cmd: str) -> str:
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, env=env, timeout=30)
        assert done.returncode == 0, (cmd, done.stderr)
        return done.stdout.decode()

    existing = sh(f"redis-cli -u {url} --scan --pattern 'session:*'").split()
    if existing:
        pytest.fail(f"redis db 14 holds session keys this test did not create: {existing[:3]}")
    sh(f"redis-cli -u {url} SET session:runbook-a x EX 600")
    sh(f"redis-cli -u {url} SET session:runbook-b x EX 600")
    try:
        for cmd in redis:
            out = sh(cmd)
            if cmd.endswith("PING"):
                assert out.strip() == "PONG"
            elif "INFO memory" in cmd:
                assert "used_memory:" in out
            elif cmd.endswith("| wc -l"):
                assert int(out) == 2
            elif "EXPIRE" in cmd:
                ttls = [int(sh(f"redis-cli -u {url} PTTL session:runbook-{k}")) for k in "ab"]
                assert all(t <= 1000 for t in ttls), ttls
    finally:
        sh(f"redis-cli -u {url} DEL session:runbook-a session:runbook-b")


def test_scaling_recipe_sums_metrics_over_instances(tmp_path: Path) -> None:
    """Two real server processes sharing PROMETHEUS_MULTIPROC_DIR, as the runbook says."""
    text = RUNBOOK.read_text()
    assert "export PROMETHEUS_MULTIPROC_DIR=" in text
    mp = tmp_path / "prom"
    mp.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mp), "ADMIN_API_KEY": KEY, "REDIS_URL": "",
           "DATABASE_URL": ""}  # fmt: skip
    a = ServerProcess(tmp_path / "a", env=env)
    b = ServerProcess(tmp_path / "b", env=env)
    for s in (a, b):
        s.tmp.mkdir()
        # Both instances write one SQLite file here; each its own journal slot.
        s.env["DATABASE_PATH"] = str(tmp_path / "shared.db")
    a.start()
    try:
        b.start()
        try:
            for s, n in ((a, 3), (b, 2)):
                for _ in range(n):
                    assert s.get_json("/")[0] == 200
            for s in (a, b):
                with urllib.request.urlopen(s.http + "/metrics", timeout=10) as r:
                    text = r.read().decode()
                total = sum(
                    sample.value
                    for fam in text_string_to_metric_families(text)
                    for sample in fam.samples
                    if sample.name == "lva_http_requests_total" and sample.labels["route"] == "/"
                )
                assert total == 5, text[:2000]
        finally:
            b.stop()
    finally:
        a.stop()
