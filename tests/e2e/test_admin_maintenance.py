"""Maintenance mode on the real server: a conversation already running finishes normally
while new WebSocket sessions are refused with 4503 and API calls get 503 + Retry-After."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

KEY = "e2e-maintenance-admin-key"
ADMIN = {"X-Admin-Key": KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("maint")
    proc = ServerProcess(tmp, env={"ADMIN_API_KEY": KEY, "REDIS_URL": ""}).start()
    yield proc
    proc.stop()


async def _text_turn(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict:
    await ws.send_json({"type": "text", "text": text})
    async with asyncio.timeout(30):
        async for msg in ws:
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            assert event["type"] != "error", event
            if event["type"] == "response_done":
                return event
    raise AssertionError("socket closed before response_done")


async def _open(http: aiohttp.ClientSession, server: ServerProcess, sid: str):
    ws = await http.ws_connect(f"{server.ws}/ws/{sid}")
    ready = json.loads((await ws.receive(timeout=10)).data)
    assert ready["type"] == "ready", ready
    await ws.send_json({"type": "start", "tts": False})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "ready"
    return ws


async def test_maintenance_life_cycle(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        running = await _open(http, server, "maint-running")
        first = await _text_turn(running, "I am learning about photosynthesis.")
        assert first["text"]

        r = await http.post(
            f"{server.http}/admin/api/maintenance",
            json={"enabled": True, "message": "Upgrading the database", "retry_after": 120},
            headers=ADMIN,
        )
        assert r.status == 200
        state = await r.json()
        assert state["enabled"] is True and state["message"] == "Upgrading the database"

        # New API calls: 503 with Retry-After and the operator's message.
        r = await http.post(f"{server.http}/api/conversation", json={"text": "hello"})
        assert r.status == 503
        assert r.headers["Retry-After"] == "120"
        assert (await r.json())["error"] == {
            "code": "maintenance",
            "message": "Upgrading the database",
        }

        # New WebSocket sessions: refused with close code 4503.
        refused = await http.ws_connect(f"{server.ws}/ws/maint-new")
        msgs = [m async for m in refused]
        assert refused.close_code == 4503
        assert any(m.type is aiohttp.WSMsgType.TEXT and "maintenance" in m.data for m in msgs)

        # The running conversation goes on as if nothing happened.
        second = await _text_turn(running, "Chlorophyll absorbs mostly red and blue light.")
        assert second["turn_id"] != first["turn_id"] and second["text"]

        # The operator surface keeps working, and says what is going on.
        r = await http.get(f"{server.http}/admin/api/health/detailed", headers=ADMIN)
        health = await r.json()
        assert health["status"] in ("degraded", "unhealthy")
        assert health["maintenance"]["enabled"] is True
        assert any("maintenance mode is on" in reason for reason in health["reasons"])
        r = await http.get(f"{server.http}/", headers={"Accept": "application/json"})
        assert r.status == 200
        r = await http.get(f"{server.http}/metrics")
        assert r.status == 200
        assert "lva_maintenance_mode 1.0" in await r.text()

        r = await http.post(
            f"{server.http}/admin/api/maintenance", json={"enabled": False}, headers=ADMIN
        )
        assert (await r.json())["enabled"] is False
        again = await _open(http, server, "maint-after")
        assert (await _text_turn(again, "Back to learning."))["text"]
        r = await http.post(f"{server.http}/api/conversation", json={"text": "hello again"})
        assert r.status == 200
        await again.close()
        await running.send_json({"type": "end"})
        kinds = [
            json.loads(m.data)["type"] async for m in running if m.type is aiohttp.WSMsgType.TEXT
        ]
        assert "summary" in kinds
        assert running.close_code == 1000

        # Closed sockets leave the active count once the server has finished with them.
        for _ in range(50):
            r = await http.get(f"{server.http}/admin/api/metrics", headers=ADMIN)
            overview = await r.json()
            if overview["sessions"]["active"] == 0:
                break
            await asyncio.sleep(0.1)
        assert overview["sessions"]["active"] == 0
        assert overview["voice"]["turns_by_mode"].get("continuous", 0) >= 3
        assert overview["sessions"]["total"] == 2  # the refused one never became a session
