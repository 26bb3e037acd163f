"""`/metrics` after real traffic, parsed back with prometheus-client's own parser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from admin import AdminHub
from admin.maintenance import MemoryBackend


def _app(hub: AdminHub) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["item_id"]})

    async def fail(request: web.Request) -> web.Response:
        raise RuntimeError("nope")

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/api/items/{item_id}", item)
    app.router.add_get("/api/fail", fail)
    return app


async def _serve(hub: AdminHub) -> TestClient:
    client = TestClient(TestServer(_app(hub)))
    await client.start_server()
    return client


@pytest.fixture
async def hub_client() -> AsyncIterator[tuple[AdminHub, TestClient]]:
    hub = AdminHub(admin_api_key="k" * 20, maintenance_backend=MemoryBackend())
    client = await _serve(hub)
    yield hub, client
    await client.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: dict, name: str, **labels: str) -> float:
    return data[(name, tuple(sorted(labels.items())))]


async def test_metrics_after_real_traffic(hub_client: tuple[AdminHub, TestClient]) -> None:
    hub, client = hub_client
    for i in range(7):
        assert (await client.get(f"/api/items/{i}")).status == 200
    for _ in range(2):
        assert (await client.get("/api/fail")).status == 500
    assert (await client.get("/definitely/missing")).status == 404

    obs = hub.observer
    obs.turn_completed(
        {"stt_final": 0.21, "llm_first_token": 0.45, "first_audio": 0.8}, "continuous"
    )
    obs.turn_completed({"stt_final": 0.05, "llm_first_token": 0.2}, "text")
    obs.turn_completed({"bogus": float("nan"), "negative": -1.0}, "weird-mode")
    obs.provider_error("stt", "Deepgram", "timeout")
    obs.provider_fallback("stt", "deepgram", "local")
    obs.work_time("vad", 0.25)
    obs.work_time("stt", 1.5)
    obs.audio_dropped(2.5)
    obs.audio_dropped(0.5)
    obs.audio_dropped(float("nan"))
    obs.audio_dropped(-1.0)
    hub.ws_opened()
    hub.ws_opened()
    hub.ws_closed()
    hub.session_opened()
    depth = {"n": 4}
    hub.add_gauge_source("capture_queue_depth", lambda: depth["n"])
    hub.add_gauge_source("capture_journal_backlog", lambda: 9)

    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    data = samples(await r.text())

    route = "/api/items/{item_id}"
    assert value(data, "lva_http_requests_total", route=route, method="GET", status="200") == 7
    assert (
        value(data, "lva_http_requests_total", route="/api/fail", method="GET", status="500") == 2
    )
    assert (
        value(data, "lva_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    )
    assert value(data, "lva_http_request_duration_seconds_count", route=route, method="GET") == 7
    assert (
        value(
            data, "lva_http_request_duration_seconds_bucket", route=route, method="GET", le="+Inf"
        )
        == 7
    )
    assert not any("/api/items/3" in str(k) for k in data)  # templates, not raw paths

    assert value(data, "lva_voice_turns_total", mode="continuous") == 1
    assert value(data, "lva_voice_turns_total", mode="text") == 1
    assert value(data, "lva_voice_turns_total", mode="other") == 1
    assert value(data, "lva_voice_stage_seconds_count", stage="stt_final") == 2
    assert value(data, "lva_voice_stage_seconds_sum", stage="stt_final") == pytest.approx(0.26)
    assert value(data, "lva_voice_stage_seconds_bucket", stage="first_audio", le="0.75") == 0
    assert value(data, "lva_voice_stage_seconds_bucket", stage="first_audio", le="1.0") == 1
    assert ("lva_voice_stage_seconds_count", (("stage", "bogus"),)) not in data
    assert (
        value(data, "lva_provider_errors_total", stage="stt", provider="deepgram", kind="timeout")
        == 1
    )
    assert (
        value(
            data,
            "lva_provider_fallbacks_total",
            stage="stt",
            from_provider="deepgram",
            to_provider="local",
        )
        == 1
    )
    assert value(data, "lva_work_seconds_total", stage="vad") == pytest.approx(0.25)
    assert value(data, "lva_work_seconds_total", stage="stt") == pytest.approx(1.5)
    assert value(data, "lva_audio_dropped_seconds_total") == pytest.approx(3.0)
    assert value(data, "lva_websocket_sessions") == 1
    assert value(data, "lva_voice_sessions") == 1
    assert value(data, "lva_capture_queue_depth") == 4
    assert value(data, "lva_capture_journal_backlog") == 9
    assert value(data, "lva_maintenance_mode") == 0
    assert value(data, "process_resident_memory_bytes") > 0
    assert not any(name.endswith("_created") for name, _ in data)

    depth["n"] = 0
    data = samples(await (await client.get("/metrics")).text())
    assert value(data, "lva_capture_queue_depth") == 0
    # The scrape itself is counted by the time of the next one.
    assert value(data, "lva_http_requests_total", route="/metrics", method="GET", status="200") == 1


async def test_label_values_are_bounded(hub_client: tuple[AdminHub, TestClient]) -> None:
    hub, client = hub_client
    for i in range(100):
        hub.observer.provider_error("llm", f"provider-{i}", "Some Kind!")
    data = samples(await (await client.get("/metrics")).text())
    providers = {
        dict(labels)["provider"] for name, labels in data if name == "lva_provider_errors_total"
    }
    assert len(providers) == 33  # 32 distinct values, then "other"
    assert "other" in providers
    assert {
        dict(labels)["kind"] for name, labels in data if name == "lva_provider_errors_total"
    } == {"some_kind"}


async def test_metrics_token() -> None:
    hub = AdminHub(
        admin_api_key="", metrics_token="scrape-token-123", maintenance_backend=MemoryBackend()
    )
    client = await _serve(hub)
    try:
        r = await client.get("/metrics")
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"
        r = await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-000"})
        assert r.status == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
        assert r.status == 200
        data = samples(await r.text())
        assert value(data, "lva_admin_auth_failures_total") == 2
    finally:
        await client.close()
