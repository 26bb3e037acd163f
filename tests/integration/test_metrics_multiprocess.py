"""Two worker processes sharing PROMETHEUS_MULTIPROC_DIR: `/metrics` from either one shows
the sum, live gauges drop a worker that exits, and maintenance mode reaches both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

KEY = "multi-proc-admin-key"

# A worker: the admin hub on a tiny app, as the real server wires it.
WORKER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    from admin import AdminHub

    hub = AdminHub(admin_api_key=__KEY__)

    async def item(request):
        return web.json_response({"pid": __import__("os").getpid()})

    async def open_session(request):
        hub.session_opened()
        hub.ws_opened()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/api/items/{item_id}", item)
    app.router.add_post("/api/open", open_session)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
).replace("__KEY__", repr(KEY))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Admin-Key", KEY)
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if _request(base + "/admin/api/maintenance")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(base)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "PYTHONPATH": os.getcwd()}
    procs, bases = [], []
    for _ in range(2):
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(port)], env=env, stderr=subprocess.PIPE
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base, proc in zip(bases, procs, strict=True):
            _wait_up(base, proc)
        yield bases, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = _request(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


ITEMS = (
    "lva_http_requests_total",
    (("method", "GET"), ("route", "/api/items/{item_id}"), ("status", "200")),
)


def test_metrics_are_summed_over_workers(workers: tuple[list[str], list[subprocess.Popen]]) -> None:
    (a, b), procs = workers
    pids = set()
    for i in range(5):
        pids.add(json.loads(_request(f"{a}/api/items/{i}")[1])["pid"])
    for i in range(3):
        pids.add(json.loads(_request(f"{b}/api/items/{i}")[1])["pid"])
    assert len(pids) == 2  # really two processes
    assert _request(f"{a}/api/open", "POST", {})[0] == 200
    assert _request(f"{b}/api/open", "POST", {})[0] == 200
    assert _request(f"{b}/api/open", "POST", {})[0] == 200

    for base in (a, b):  # whichever worker answers the scrape
        data = _metrics(base)
        assert data[ITEMS] == 8
        duration_count = (
            "lva_http_request_duration_seconds_count",
            (("method", "GET"), ("route", "/api/items/{item_id}")),
        )
        assert data[duration_count] == 8
        assert data[("lva_voice_sessions", ())] == 3
        assert data[("lva_websocket_sessions", ())] == 3

    # The admin overview, from either worker, carries the fleet-wide totals too.
    for base in (a, b):
        status, body = _request(base + "/admin/api/metrics")
        assert status == 200
        overview = json.loads(body)
        fleet = overview["fleet"]
        assert fleet["workers"] == 2
        assert fleet["requests"]["total"] == 11  # 8 items + 3 opens; admin calls left out
        assert fleet["requests"]["errors_5xx"] == 0
        assert 0 < fleet["requests"]["latency_ms"]["p50"] <= fleet["requests"]["latency_ms"]["p99"]
        assert fleet["sessions"]["active"] == 3
        assert overview["requests"]["total"] < 11  # this worker's own share only

        # Worker B exits cleanly: its live gauges leave the sum, its counters stay.
    procs[1].send_signal(signal.SIGINT)
    procs[1].wait(10)
    data = _metrics(a)
    assert data[("lva_voice_sessions", ())] == 1
    assert data[ITEMS] == 8


def test_maintenance_reaches_every_worker(
    workers: tuple[list[str], list[subprocess.Popen]],
) -> None:
    (a, b), _ = workers
    assert _request(f"{b}/api/items/1")[0] == 200
    status, body = _request(
        f"{a}/admin/api/maintenance", "POST", {"enabled": True, "message": "db upgrade"}
    )
    assert status == 200
    assert json.loads(body)["backend"] == "file"
    deadline = time.monotonic() + 5
    while _request(f"{b}/api/items/1")[0] != 503:
        assert time.monotonic() < deadline, "worker B never saw maintenance mode"
        time.sleep(0.1)
    status, body = _request(f"{b}/api/items/1")
    assert json.loads(body)["error"] == {"code": "maintenance", "message": "db upgrade"}
    assert _request(f"{a}/api/items/1")[0] == 503
    assert _request(f"{a}/admin/api/maintenance", "POST", {"enabled": False})[0] == 200
    deadline = time.monotonic() + 5
    while _request(f"{b}/api/items/1")[0] != 200:
        assert time.monotonic() < deadline, "worker B never left maintenance mode"
        time.sleep(0.1)
