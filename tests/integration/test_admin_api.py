"""Admin API against a real aiohttp server on a loopback port: auth, every route, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin import AdminHub
from admin.maintenance import MemoryBackend

KEY = "test-admin-key-0123456789"
ADMIN_ROUTES = [
    "/admin/api/health/detailed",
    "/admin/api/metrics",
    "/admin/api/metrics/endpoints",
    "/admin/api/metrics/system",
    "/admin/api/metrics/errors?limit=5",
    "/admin/api/maintenance",
]


def build_app(hub: AdminHub) -> web.Application:
    """A small app shaped like the real one: the hub's middleware first, a few API routes."""

    async def item(request: web.Request) -> web.Response:
        await asyncio.sleep(0.002)
        return web.json_response({"id": request.match_info["item_id"]})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("kaboom")

    async def bad(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "bad_thing", "message": "no"}}, status=400)

    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"status": "loading"}, status=503, headers={"Retry-After": "1"})

    async def root(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/", root)
    app.router.add_get("/api/items/{item_id}", item)
    app.router.add_get("/api/boom", boom)
    app.router.add_get("/api/bad", bad)
    app.router.add_get("/api/busy", busy)
    return app


async def _client(hub: AdminHub) -> TestClient:
    client = TestClient(TestServer(build_app(hub)))
    await client.start_server()
    return client


@pytest.fixture
async def hub() -> AdminHub:
    h = AdminHub(admin_api_key=KEY, maintenance_backend=MemoryBackend())

    async def db_ok() -> bool:
        return True

    h.add_health_check("database", db_ok)
    return h


@pytest.fixture
async def client(hub: AdminHub) -> AsyncIterator[TestClient]:
    c = await _client(hub)
    yield c
    await c.close()


def auth(key: str = KEY) -> dict[str, str]:
    return {"X-Admin-Key": key}


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_admin_routes_need_the_key(client: TestClient, path: str) -> None:
    r = await client.get(path)
    assert r.status == 401
    body = await r.json()
    assert body["error"]["code"] == "unauthorized"
    assert "missing" in body["error"]["message"]
    r = await client.get(path, headers=auth("wrong-key-wrong-key"))
    assert r.status == 401
    assert "invalid" in (await r.json())["error"]["message"]
    r = await client.get(path, headers=auth())
    assert r.status == 200, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    assert isinstance(await r.json(), dict)


async def test_post_maintenance_needs_the_key(client: TestClient, hub: AdminHub) -> None:
    r = await client.post("/admin/api/maintenance", json={"enabled": True})
    assert r.status == 401
    assert hub.maintenance.enabled is False


@pytest.mark.parametrize("path", [*ADMIN_ROUTES])
async def test_no_key_configured_means_closed(path: str) -> None:
    hub = AdminHub(admin_api_key="", maintenance_backend=MemoryBackend())
    c = await _client(hub)
    try:
        for headers in ({}, auth(), auth("")):
            r = await c.get(path, headers=headers)
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "admin_disabled"
    finally:
        await c.close()


async def test_wrong_keys_are_rate_limited_per_client(client: TestClient) -> None:
    for _ in range(10):
        r = await client.get("/admin/api/metrics", headers=auth("nope-nope-nope"))
        assert r.status == 401
    r = await client.get("/admin/api/metrics", headers=auth("nope-nope-nope"))
    assert r.status == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert (await r.json())["error"]["code"] == "too_many_attempts"
    # The right key is never refused, even from the address that failed.
    r = await client.get("/admin/api/metrics", headers=auth())
    assert r.status == 200
    # Wrong keys go on being refused, and each further failure does not shorten the wait.
    r = await client.get("/admin/api/metrics", headers=auth("nope-nope-nope"))
    assert r.status == 429


async def test_right_key_does_not_count_as_failure(client: TestClient) -> None:
    for _ in range(25):
        r = await client.get("/admin/api/maintenance", headers=auth())
        assert r.status == 200


async def test_metrics_overview_counts_real_traffic(client: TestClient) -> None:
    for i in range(6):
        assert (await client.get(f"/api/items/{i}")).status == 200
    assert (await client.get("/api/boom")).status == 500
    assert (await client.get("/api/bad")).status == 400
    r = await client.get("/admin/api/metrics", headers=auth())
    data = await r.json()
    req = data["requests"]
    # 6 items + boom + bad (this admin request is recorded after its body is built)
    assert req["total"] == 8
    assert req["errors"] == 1
    assert req["client_errors"] == 1
    assert req["error_rate"] == pytest.approx(1 / 8)
    lat = req["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert lat["p50"] >= 1.5  # the item handler sleeps 2 ms
    assert data["scope"] == "process"
    assert data["uptime_seconds"] >= 0
    assert data["sessions"] == {"active": 0, "total": 0}


async def test_endpoints_use_route_templates(client: TestClient) -> None:
    for i in range(5):
        await client.get(f"/api/items/{i}-{i}")
    await client.get("/no/such/path")
    await client.get("/another/missing/one")
    r = await client.get("/admin/api/metrics/endpoints", headers=auth())
    rows = {(e["route"], e["method"]): e for e in (await r.json())["endpoints"]}
    item = rows[("/api/items/{item_id}", "GET")]
    assert item["count"] == 5
    assert item["errors"] == 0
    assert item["latency_ms"]["p50"] > 0
    assert item["recent_latency_ms"]["count"] == 5
    assert rows[("<unmatched>", "GET")]["count"] == 2
    assert rows[("<unmatched>", "GET")]["client_errors"] == 2
    assert not any("/api/items/0" in route for route, _ in rows)


async def test_errors_ring_correlates_with_request_id(client: TestClient) -> None:
    r = await client.get("/api/boom", headers={"X-Request-ID": "trace-abc-123456"})
    assert r.status == 500
    assert r.headers["X-Request-ID"] == "trace-abc-123456"
    body = await r.json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["request_id"] == "trace-abc-123456"
    r = await client.get("/api/boom")
    generated = r.headers["X-Request-ID"]
    assert len(generated) == 32
    r = await client.get("/admin/api/metrics/errors?limit=50", headers=auth())
    data = await r.json()
    assert data["total"] == 2
    newest, older = data["errors"]
    assert newest["request_id"] == generated
    assert older["request_id"] == "trace-abc-123456"
    assert older["route"] == "/api/boom"
    assert older["status"] == 500
    assert older["code"] == "RuntimeError"
    assert older["time_iso"].endswith("Z")
    r = await client.get("/admin/api/metrics/errors?limit=1", headers=auth())
    assert len((await r.json())["errors"]) == 1


@pytest.mark.parametrize("raw", [b"{", b"[" * 60_000, b"\xff"])
async def test_maintenance_body_must_be_json(client: TestClient, hub: AdminHub, raw: bytes) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    r = await client.post("/admin/api/maintenance", data=raw, headers=headers)
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_json"
    assert hub.maintenance.enabled is False


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_maintenance_body_must_be_declared_json(
    client: TestClient, hub: AdminHub, content_type: str
) -> None:
    headers = {**auth(), "Content-Type": content_type}
    r = await client.post("/admin/api/maintenance", data=b'{"enabled": true}', headers=headers)
    assert r.status == 415
    assert (await r.json())["error"]["code"] == "unsupported_media_type"
    assert hub.maintenance.enabled is False


async def test_metrics_report_first_output_latency_per_provider(
    client: TestClient, hub: AdminHub
) -> None:
    for seconds in (0.2, 0.2, 0.4):
        hub.observer.provider_latency("llm", "anthropic", seconds)
    hub.observer.provider_latency("tts", "deepgram", 0.1)
    r = await client.get("/admin/api/metrics", headers=auth())
    latency = (await r.json())["providers"]["first_output_ms"]
    assert set(latency) == {"llm", "tts"}
    assert latency["llm"]["anthropic"]["count"] == 3
    assert 190 <= latency["llm"]["anthropic"]["p50_ms"] <= 210
    assert 390 <= latency["llm"]["anthropic"]["max_ms"] <= 410
    assert latency["tts"]["deepgram"]["count"] == 1


@pytest.mark.parametrize("limit", ["0", "201", "x", "-3"])
async def test_errors_limit_is_validated(client: TestClient, limit: str) -> None:
    r = await client.get(f"/admin/api/metrics/errors?limit={limit}", headers=auth())
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_limit"


async def test_system_metrics(client: TestClient) -> None:
    await asyncio.sleep(1.1)  # let the loop-lag monitor take a couple of samples
    r = await client.get("/admin/api/metrics/system", headers=auth())
    data = await r.json()
    assert data["memory"]["rss_bytes"] > 10 * 1024 * 1024
    assert data["memory"]["system_total_bytes"] >= data["memory"]["rss_bytes"]
    assert 0 <= data["cpu_percent"] <= 100 * data["cpu_count"]
    assert data["open_fds"] > 3
    assert data["connections"]["listening"] >= 1  # the test server's socket
    assert data["event_loop_lag"]["samples"] >= 1
    assert data["event_loop_lag"]["current_ms"] >= 0
    assert data["process_uptime_seconds"] > 0


async def test_health_detailed_aggregates_checks() -> None:
    hub = AdminHub(admin_api_key=KEY, maintenance_backend=MemoryBackend())

    async def ok() -> bool:
        return True

    async def slow() -> bool:
        await asyncio.sleep(5)
        return True

    async def providers() -> dict[str, object]:
        return {"status": "degraded", "reason": "deepgram circuit open", "circuits": {"x": 1}}

    async def broken() -> bool:
        raise ConnectionRefusedError("connection refused")

    hub.add_health_check("database", ok)
    hub.add_health_check("providers", providers, critical=False)
    c = await _client(hub)
    try:
        r = await c.get("/admin/api/health/detailed", headers=auth())
        data = await r.json()
        assert r.status == 200
        assert data["status"] == "degraded"
        assert data["checks"]["database"]["status"] == "healthy"
        assert data["checks"]["providers"]["circuits"] == {"x": 1}
        assert data["reasons"] == ["providers: degraded (deepgram circuit open)"]
        assert data["maintenance"]["enabled"] is False

        hub.add_health_check("session_store", slow, timeout=0.2)
        hub.add_health_check("cache", broken)
        started = asyncio.get_running_loop().time()
        r = await c.get("/admin/api/health/detailed", headers=auth())
        took = asyncio.get_running_loop().time() - started
        data = await r.json()
        assert r.status == 503
        assert data["status"] == "unhealthy"
        assert took < 1.5  # concurrent, each bounded by its own timeout
        assert data["checks"]["session_store"]["reason"] == "timed out after 0.2s"
        assert "ConnectionRefusedError" in data["checks"]["cache"]["reason"]
    finally:
        await c.close()


async def test_dashboard_page_needs_no_key_and_has_no_data(client: TestClient) -> None:
    r = await client.get("/admin/")
    assert r.status == 200
    html = await r.text()
    assert "<canvas" in html
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    r = await client.get("/admin", allow_redirects=False)
    assert r.status == 308
    assert r.headers["Location"] == "/admin/"
    r = await client.get("/admin/static/dashboard.js")
    assert r.status == 200
    r = await client.get("/admin/static/../hub.py")
    assert r.status in (403, 404)


async def test_request_id_header_on_every_response(client: TestClient) -> None:
    for path in ("/", "/api/items/1", "/nope", "/admin/", "/metrics"):
        r = await client.get(path)
        assert len(r.headers["X-Request-ID"]) >= 8, path
    r = await client.get("/", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["X-Request-ID"] != "bad id with spaces"


async def test_deliberate_503_is_not_a_server_error(client: TestClient, hub: AdminHub) -> None:
    """A 503 with Retry-After (models loading, maintenance) is the server saying "not now"."""
    assert (await client.get("/api/busy")).status == 503
    await hub.maintenance.set(True, "upgrading")
    r = await client.get("/api/items/1")
    assert r.status == 503 and r.headers["Retry-After"] == "300"
    await hub.maintenance.set(False)
    r = await client.get("/admin/api/metrics", headers=auth())
    req = (await r.json())["requests"]
    assert req["total"] == 2 and req["errors"] == 0 and req["error_rate"] == 0
    r = await client.get("/admin/api/metrics/errors", headers=auth())
    assert (await r.json())["errors"] == []
    r = await client.get("/metrics")
    text = await r.text()
    assert 'lva_http_requests_total{method="GET",route="/api/busy",status="503"} 1.0' in text


def test_from_settings_reads_the_server_settings() -> None:
    from server.settings import Settings

    settings = Settings.from_env(
        {
            "ADMIN_API_KEY": "from-env-admin-key-0123",
            "METRICS_TOKEN": "from-env-token-0123456",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    hub = AdminHub.from_settings(settings)
    assert hub.admin_api_key == "from-env-admin-key-0123"
    assert hub.metrics_token == "from-env-token-0123456"
    assert hub.maintenance.backend.name == "redis"
    prefix = getattr(settings, "redis_key_prefix", "")
    assert hub.maintenance.backend.key == f"{prefix}lva:maintenance"  # type: ignore[attr-defined]
    assert AdminHub.from_settings(Settings.from_env({})).maintenance.backend.name == "memory"
