"""A real Prometheus (Debian's binary) on loopback scrapes the server and evaluates the
shipped alert rules (deploy/prometheus/alerts.yml) every second.

1. `python -m server --workers 2` with a language-model chain `anthropic,local` whose
   Anthropic is a fake that answers 500 to everything: the typed turns are answered by the
   local coach, the fallback alert fires, the circuit alert goes pending, the stage-down and
   error alerts stay quiet, and the counters Prometheus holds are the sums over both workers.
2. Two hub workers sharing a multiprocess directory answer a burst of 5xx: the error
   alerts go pending, with the errors of both workers counted in one scrape.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import fixtures as fx
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import Fault
from tests.prometheus_process import PrometheusProcess, require_prometheus
from tests.server_process import ROOT, ServerProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

fake_anthropic = fx.fake_anthropic

KEY = "scrape-test-admin-key-0123"
CONVERSATIONS = 12


@pytest.fixture
def prometheus_available() -> None:
    require_prometheus()


def alerts_named(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"]["alertname"] == name]


async def eventually(
    prom: PrometheusProcess, check: Callable[[], Any], what: str, timeout: float = 30.0
) -> Any:
    """Run the blocking `check` in a thread until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.3)
    targets = await asyncio.to_thread(prom.targets)
    alerts = [(a["labels"]["alertname"], a["state"]) for a in await asyncio.to_thread(prom.alerts)]
    raise AssertionError(
        f"timed out waiting for {what}; last: {last!r}; targets: {targets}; alerts: {alerts}"
    )


async def worker_pids(server: ServerProcess, timeout: float = 30.0) -> dict[int, dict]:
    """Each worker's own admin overview, once both answered (new connections land on
    either worker; the second may still be starting when the first is ready)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while len(seen) < 2 and time.monotonic() < deadline:
            async with http.get(
                f"{server.http}/admin/api/metrics", headers={"X-Admin-Key": KEY}
            ) as r:
                assert r.status == 200
                overview = await r.json()
            seen[overview["pid"]] = overview
            await asyncio.sleep(0.05)
    return seen


async def test_failing_provider_on_two_workers(
    tmp_path: Path, prometheus_available: None, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.always = Fault("status", status=500)
    mp_dir = tmp_path / "metrics"
    mp_dir.mkdir()
    env = {
        "STT_PROVIDERS": "simulated",
        "TTS_PROVIDERS": "simulated",
        "LLM_PROVIDERS": "anthropic,local",
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "ADMIN_API_KEY": KEY,
        "METRICS_TOKEN": "",
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
        "PYTHONPATH": str(ROOT),  # this checkout's packages, whatever is installed
        # Typed turns without a credential, one every 0.3 s from one address: more than a
        # person types; the per-address turn budget is raised for this metrics test.
        "CONVERSATION_PER_MINUTE": "1000",
    }
    server = ServerProcess(tmp_path, env, args=["--workers", "2"])
    await asyncio.to_thread(server.start)
    prom = PrometheusProcess(tmp_path / "prometheus", [f"127.0.0.1:{server.port}"])
    try:
        assert len(await worker_pids(server)) == 2, "the second worker never answered"
        await asyncio.to_thread(prom.start)
        fallback = (
            'lva_provider_fallbacks_total{stage="llm", from_provider="anthropic", '
            'to_provider="local"}'
        )
        # Every fallback the chain can take is a series at 0 before the first one happens.
        assert await eventually(prom, lambda: prom.scalar(fallback) == 0.0, "fallbacks at 0")

        connector = aiohttp.TCPConnector(force_close=True)  # spread over both workers
        async with aiohttp.ClientSession(connector=connector) as http:
            for i in range(CONVERSATIONS):
                async with http.post(
                    f"{server.http}/api/conversation",
                    json={"text": f"spaced repetition works number {i}"},
                ) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["agent_text"]
                await asyncio.sleep(0.3)
        failures = len(fake_anthropic.requests)
        assert failures >= 2  # each worker tried Anthropic until its circuit opened

        # Sums across both workers, as Prometheus scraped them.
        conversations = (
            'sum(lva_http_requests_total{route="/api/conversation", method="POST", status="200"})'
        )
        errors = 'sum(lva_provider_errors_total{stage="llm", provider="anthropic"})'
        await eventually(
            prom,
            lambda: prom.scalar(conversations) == CONVERSATIONS and prom.scalar(errors) == failures,
            "the summed counters",
        )
        workers = await worker_pids(server)
        per_worker = [w["providers"]["errors"] for w in workers.values()]
        assert sum(per_worker) == failures
        assert all(n < failures for n in per_worker), per_worker  # both took a share
        # Health is sampled every 5 s: Anthropic's circuit shows open, the local coach's not,
        # and the stage still has one provider (its worst worker).
        await eventually(
            prom,
            lambda: (
                prom.scalar('lva_provider_circuit_open{stage="llm", provider="anthropic"}') == 1
                and prom.scalar('lva_stage_providers_available{stage="llm"}') == 1
            ),
            "the circuit of anthropic open",
        )
        assert prom.scalar('lva_provider_circuit_open{stage="llm", provider="local"}') == 0
        assert prom.query("lva_http_server_errors_total") == []

        def expected_states() -> list[dict[str, Any]] | None:
            alerts = prom.alerts()
            fallbacks = alerts_named(alerts, "LvaProviderFallbacks")
            circuit = alerts_named(alerts, "LvaProviderCircuitOpen")
            ready = [a["state"] for a in fallbacks] == ["firing"] and [
                a["state"] for a in circuit
            ] == ["pending"]
            return alerts if ready else None

        alerts = await eventually(prom, expected_states, "fallback firing and circuit pending")
        (fired,) = alerts_named(alerts, "LvaProviderFallbacks")
        print("LvaProviderFallbacks as Prometheus reports it:", json.dumps(fired, indent=2))
        assert fired["labels"] == {
            "alertname": "LvaProviderFallbacks",
            "job": "learning-voice-agent",
            "stage": "llm",
            "from_provider": "anthropic",
            "to_provider": "local",
            "severity": "P4",
        }
        assert fired["annotations"]["summary"] == "llm: fell back from anthropic to local"
        assert fired["annotations"]["runbook_url"].endswith("runbook.md#lvaproviderfallbacks")
        assert float(fired["value"]) > 0
        (circuit,) = alerts_named(alerts, "LvaProviderCircuitOpen")
        assert circuit["labels"]["provider"] == "anthropic"
        assert circuit["labels"]["severity"] == "P3"
        quiet = {"LvaStageProvidersAllDown", "LvaHighErrorRate", "LvaMostRequestsFailing"}
        quiet |= {"LvaTargetDown", "LvaDatabaseUnreachable", "LvaRedisUnreachable"}
        assert quiet.isdisjoint(a["labels"]["alertname"] for a in alerts), alerts
        health = await asyncio.to_thread(prom.rule_health)
        assert set(health.values()) == {"ok"}, health  # every rule evaluates on real series
    finally:
        await asyncio.to_thread(prom.stop)
        await asyncio.to_thread(server.stop)


# Two processes with the admin hub, as the server wires it, and a route that fails.
WORKER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    from admin import AdminHub

    hub = AdminHub()

    async def ok(request):
        return web.json_response({"ok": True})

    async def fail(request):
        raise RuntimeError("the handler is broken")

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/api/ok", ok)
    app.router.add_get("/api/fail", fail)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


@pytest.fixture
def hub_workers(tmp_path: Path) -> Iterator[list[str]]:
    mp_dir = tmp_path / "metrics"
    mp_dir.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "PYTHONPATH": str(ROOT)}
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(p)], env=env, stderr=subprocess.PIPE)
        for p in ports
    ]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for base, proc in zip(bases, procs, strict=True):
            _wait_up(base, proc)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(base + "/metrics", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(base)


async def test_burst_of_5xx_across_two_workers(
    tmp_path: Path, prometheus_available: None, hub_workers: list[str]
) -> None:
    a, b = hub_workers
    # Either worker answers /metrics with the sum over both: scrape one, as for --workers.
    prom = PrometheusProcess(tmp_path / "prometheus", [a.removeprefix("http://")])
    await asyncio.to_thread(prom.start)
    try:
        async with aiohttp.ClientSession() as http:
            for base in (a, b):
                async with http.get(base + "/api/ok") as r:
                    assert r.status == 200
            await eventually(
                prom,
                lambda: prom.scalar('sum(lva_http_requests_total{route="/api/ok"})') == 2,
                "the first scrape",
            )
            for i in range(12):  # spread over several scrapes so rate() sees it grow
                async with http.get((a, b)[i % 2] + "/api/fail") as r:
                    assert r.status == 500
                await asyncio.sleep(0.25)
        await eventually(
            prom,
            lambda: (
                prom.scalar('sum(lva_http_server_errors_total{route="/api/fail"})') == 12
                and prom.scalar('sum(lva_http_requests_total{route="/api/fail", status="500"})')
                == 12
            ),
            "12 server errors, 6 from each worker",
        )

        def both_pending() -> list[dict[str, Any]] | None:
            alerts = prom.alerts()
            states = {a["labels"]["alertname"]: a["state"] for a in alerts}
            wanted = {"LvaHighErrorRate": "pending", "LvaMostRequestsFailing": "pending"}
            return alerts if wanted.items() <= states.items() else None

        alerts = await eventually(prom, both_pending, "the error alerts pending")
        (p1,) = alerts_named(alerts, "LvaMostRequestsFailing")
        assert p1["labels"] == {
            "alertname": "LvaMostRequestsFailing",
            "job": "learning-voice-agent",
            "severity": "P1",
        }
        assert float(p1["value"]) > 0.5
        # Nothing else is wrong with these workers. (A fresh process's memory grows while it
        # warms up: LvaMemoryGrowing may be pending, as its 2 hours are far from over.)
        others = {a["labels"]["alertname"] for a in alerts} - {
            "LvaHighErrorRate",
            "LvaMostRequestsFailing",
            "LvaMemoryGrowing",
        }
        assert others == set(), others
        assert all(a["state"] == "pending" for a in alerts), alerts
    finally:
        await asyncio.to_thread(prom.stop)
