"""The series the alert rules need beyond traffic: server errors (not deliberate 503s),
health checks, provider circuits, captures dropped and resident memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from admin import AdminHub
from admin.checks import providers_check
from admin.maintenance import MemoryBackend

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: Samples, name: str, **labels: str) -> float:
    return data[(name, tuple(sorted(labels.items())))]


class Chain:
    """What `providers_check` reads of a provider chain: `status()`, one dict a member."""

    def __init__(self, **states: str) -> None:
        self.states = states

    def status(self) -> list[dict[str, Any]]:
        return [{"provider": name, "state": state} for name, state in self.states.items()]


class Providers:
    def __init__(self) -> None:
        self.stt = Chain(deepgram="closed", openai="closed")
        self.llm = Chain(anthropic="closed", local="closed")
        self.tts = type("PiperTTS", (), {"name": "piper"})()  # one provider, no breaker


@pytest.fixture
async def hub_client() -> AsyncIterator[tuple[AdminHub, TestClient]]:
    hub = AdminHub(admin_api_key="k" * 20, maintenance_backend=MemoryBackend())

    async def fail(request: web.Request) -> web.Response:
        raise RuntimeError("broken handler")

    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"error": "full"}, status=503, headers={"Retry-After": "5"})

    async def gateway(request: web.Request) -> web.Response:
        return web.json_response({"error": "upstream"}, status=502)

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/api/fail", fail)
    app.router.add_get("/api/busy", busy)
    app.router.add_get("/api/gateway", gateway)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield hub, client
    await client.close()


async def scrape(client: TestClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status == 200
    return samples(await r.text())


async def test_server_errors_leave_out_deliberate_503s(
    hub_client: tuple[AdminHub, TestClient],
) -> None:
    _, client = hub_client
    for _ in range(3):
        assert (await client.get("/api/fail")).status == 500
    assert (await client.get("/api/gateway")).status == 502
    for _ in range(4):
        assert (await client.get("/api/busy")).status == 503
    data = await scrape(client)
    assert value(data, "lva_http_server_errors_total", route="/api/fail", method="GET") == 3
    assert value(data, "lva_http_server_errors_total", route="/api/gateway", method="GET") == 1
    assert ("lva_http_server_errors_total", (("method", "GET"), ("route", "/api/busy"))) not in data
    # The busy answers are still counted as requests, by status.
    assert (
        value(data, "lva_http_requests_total", route="/api/busy", method="GET", status="503") == 4
    )


async def test_health_checks_become_gauges(hub_client: tuple[AdminHub, TestClient]) -> None:
    hub, client = hub_client

    async def database_down() -> bool:
        raise ConnectionRefusedError("no route to the database")

    async def redis_up() -> bool:
        return True

    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    hub.add_health_check("database", database_down)
    hub.add_health_check("session_store", redis_up)
    hub.add_health_check("capture_writer", hangs, critical=False, timeout=0.05)
    await hub.sample_health()
    data = await scrape(client)
    assert value(data, "lva_health_check_up", check="database") == 0
    assert value(data, "lva_health_check_up", check="session_store") == 1
    assert value(data, "lva_health_check_up", check="capture_writer") == 0  # timed out


async def test_provider_circuits_and_stage_availability(
    hub_client: tuple[AdminHub, TestClient],
) -> None:
    hub, client = hub_client
    providers = Providers()
    hub.add_health_check("providers", providers_check(providers), critical=False)
    await hub.sample_health()
    data = await scrape(client)
    for stage, provider in (("stt", "deepgram"), ("llm", "anthropic"), ("tts", "piper")):
        assert value(data, "lva_provider_circuit_open", stage=stage, provider=provider) == 0
    assert value(data, "lva_stage_providers_available", stage="stt") == 2
    assert value(data, "lva_stage_providers_available", stage="tts") == 1
    # Every fallback a chain can take starts at 0, so the first one is an increase.
    fallback = "lva_provider_fallbacks_total"
    assert value(data, fallback, stage="llm", from_provider="anthropic", to_provider="local") == 0
    assert value(data, fallback, stage="stt", from_provider="deepgram", to_provider="openai") == 0
    assert ("lva_provider_fallbacks_total", (("from_provider", "local"),)) not in data

    providers.llm.states["anthropic"] = "open"
    providers.stt.states.update(deepgram="open", openai="half_open")
    hub.observer.provider_fallback("llm", "Anthropic", "local")
    await hub.sample_health()
    data = await scrape(client)
    assert value(data, "lva_provider_circuit_open", stage="llm", provider="anthropic") == 1
    assert value(data, "lva_provider_circuit_open", stage="llm", provider="local") == 0
    assert value(data, "lva_provider_circuit_open", stage="stt", provider="openai") == 1
    assert value(data, "lva_stage_providers_available", stage="llm") == 1
    # half-open: one probe may go through, so the stage is not down yet
    assert value(data, "lva_stage_providers_available", stage="stt") == 1
    assert value(data, fallback, stage="llm", from_provider="anthropic", to_provider="local") == 1

    providers.stt.states["openai"] = "open"
    await hub.sample_health()
    data = await scrape(client)
    assert value(data, "lva_stage_providers_available", stage="stt") == 0


async def test_provider_labels_stay_bounded(hub_client: tuple[AdminHub, TestClient]) -> None:
    hub, client = hub_client
    providers = Providers()
    providers.llm = Chain(**{f"provider-{i}": "open" for i in range(60)})
    hub.add_health_check("providers", providers_check(providers), critical=False)
    await hub.sample_health()
    data = await scrape(client)
    names = {
        dict(labels)["provider"] for name, labels in data if name == "lva_provider_circuit_open"
    }
    assert len(names) <= 33  # the label cap, plus "other"
    assert "other" in names


async def test_capture_dropped_is_a_counter_fed_by_a_running_total(
    hub_client: tuple[AdminHub, TestClient],
) -> None:
    hub, client = hub_client
    writer = {"dropped": 0}
    hub.add_gauge_source("capture_dropped", lambda: writer["dropped"])
    hub.sample_gauges()
    data = await scrape(client)
    assert value(data, "lva_capture_dropped_total") == 0
    for total in (3, 3, 5):
        writer["dropped"] = total
        hub.sample_gauges()
    assert value(await scrape(client), "lva_capture_dropped_total") == 5
    writer["dropped"] = 2  # a new writer counting from 0 again: 2 more lost
    hub.sample_gauges()
    assert value(await scrape(client), "lva_capture_dropped_total") == 7
    assert hub.overview()["capture"]["capture_dropped"] == 2


async def test_background_sampling_exports_memory_and_health() -> None:
    hub = AdminHub(maintenance_backend=MemoryBackend(), sync_interval=0.02, health_interval=0.02)
    calls = 0

    async def database() -> bool:
        nonlocal calls
        calls += 1
        return calls < 3  # fails from the third check on

    hub.add_health_check("database", database)
    await hub.start()
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            data = samples(hub.prom.exposition().decode())
            memory = data.get(("lva_process_resident_memory_bytes", ()), 0.0)
            database = data.get(("lva_health_check_up", (("check", "database"),)))
            if memory > 0 and database == 0:
                break
            assert asyncio.get_running_loop().time() < deadline, data
            await asyncio.sleep(0.02)
    finally:
        await hub.stop()
    assert memory > 10_000_000  # this Python process: tens of megabytes at least
    assert calls >= 3


async def test_capture_dropped_wired_to_a_real_capture_writer(
    hub_client: tuple[AdminHub, TestClient],
) -> None:
    """The line server/app.py's `_watch_storage` needs, on a writer that has to drop."""
    from pipelines.ports import Capture
    from server.storage.writer import CaptureWriter

    hub, client = hub_client

    class NeverCalled:
        async def write_batch(self, captures: list[Capture]) -> None:
            raise AssertionError("the writer is not started: nothing is written")

    writer = CaptureWriter(NeverCalled(), batch_size=10, flush_ms=50, queue_max=2, journal_dir=None)
    hub.add_gauge_source("capture_dropped", lambda: writer.dropped)
    for i in range(7):  # 2 queued, 2 more kept past the bound (no journal), 3 dropped
        writer.submit(Capture("s", f"user {i}", f"agent {i}", 1.0))
    hub.sample_gauges()
    assert writer.dropped == 3
    assert value(await scrape(client), "lva_capture_dropped_total") == 3
