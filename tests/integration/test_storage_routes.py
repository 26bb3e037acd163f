"""The captures HTTP API on the embedded stack (memory sessions, SQLite, writer)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from test_storage_support import make_client

from pipelines.ports import Capture, Exchange
from server.appkeys import STORAGE


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with make_client(tmp_path) as c:
        yield c


async def seed(client: TestClient) -> None:
    storage = client.server.app[STORAGE]
    now = time.time()
    rows = [
        ("alice", "How does spaced repetition work?", "It schedules reviews further apart."),
        ("alice", "What is the forgetting curve?", "Memory decays without review."),
        ("bob", "Explain photosynthesis <script>x</script>", "Plants turn light into sugar."),
    ]
    for i, (sid, user, agent) in enumerate(rows):
        storage.writer.submit(Capture(sid, user, agent, now - 10 + i, {"mode": "ptt"}))
    await storage.writer.close()  # flush now (the fixture's close is then a no-op)
    await storage.sessions.append_exchange("alice", Exchange("hi", "hello", now))
    await storage.sessions.touch("carol")


async def test_search_returns_highlighted_results(client: TestClient) -> None:
    await seed(client)
    resp = await client.post("/api/search", json={"query": "spaced repetition", "limit": 5})
    assert resp.status == 200
    body = await resp.json()
    assert body["query"] == "spaced repetition"
    assert body["count"] >= 1
    top = body["results"][0]
    keys = {"id", "session_id", "timestamp", "user_text", "agent_text", "snippet", "score"}
    assert set(top) == keys
    assert top["session_id"] == "alice" and "<mark>" in top["snippet"]
    assert top["timestamp"].endswith("+00:00")
    resp = await client.post("/api/search", json={"query": "photosynthesis"})
    snippet = (await resp.json())["results"][0]["snippet"]
    assert "<script>" not in snippet and "&lt;script&gt;" in snippet


async def test_search_session_filter(client: TestClient) -> None:
    await seed(client)
    resp = await client.post("/api/search", json={"query": "review light", "session_id": "bob"})
    body = await resp.json()
    assert {r["session_id"] for r in body["results"]} == {"bob"}


async def test_stats_counts_without_listing_sessions(client: TestClient) -> None:
    await seed(client)
    resp = await client.get("/api/stats")
    assert resp.status == 200
    body = await resp.json()
    assert body["total_captures"] == 3
    assert body["total_sessions"] == 2
    assert body["captures_last_24h"] == 3
    assert body["active_sessions"] == 2
    assert body["last_capture_at"] is not None
    assert "alice" not in await resp.text() and "carol" not in await resp.text()


async def test_stats_on_empty_store(client: TestClient) -> None:
    body = await (await client.get("/api/stats")).json()
    assert body["total_captures"] == 0 and body["last_capture_at"] is None


async def test_history_and_limit(client: TestClient) -> None:
    await seed(client)
    body = await (await client.get("/api/sessions/alice/history")).json()
    assert body["count"] == 2
    assert body["captures"][0]["user_text"].startswith("How does spaced")
    assert body["captures"][0]["metadata"] == {"mode": "ptt"}
    body = await (await client.get("/api/sessions/alice/history?limit=1")).json()
    assert [c["user_text"] for c in body["captures"]] == ["What is the forgetting curve?"]
    resp = await client.get("/api/sessions/nobody/history")  # nobody's: as if it did not exist
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "session_not_found"


@pytest.mark.parametrize(
    "path, code",
    [
        ("/api/sessions/alice/history?limit=0", "invalid_limit"),
        ("/api/sessions/alice/history?limit=1001", "invalid_limit"),
        ("/api/sessions/alice/history?limit=abc", "invalid_limit"),
        ("/api/sessions/alice/history?limit=%C2%B2", "invalid_limit"),
        ("/api/sessions/alice/history?limit=1.5", "invalid_limit"),
        ("/api/sessions/" + "x" * 65 + "/history", "invalid_session_id"),
        ("/api/sessions/bad%20id/history", "invalid_session_id"),
        ("/api/sessions/alice/export?format=pdf", "invalid_format"),
        ("/api/sessions/a.b/export", "invalid_session_id"),
    ],
)
async def test_bad_path_or_query_is_400(client: TestClient, path: str, code: str) -> None:
    resp = await client.get(path)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


async def test_export_json_and_markdown(client: TestClient) -> None:
    await seed(client)
    resp = await client.get("/api/sessions/alice/export")
    assert resp.status == 200
    assert "attachment" in resp.headers["Content-Disposition"]
    body = await resp.json()
    assert body["count"] == 2 and body["session_id"] == "alice"
    resp = await client.get("/api/sessions/bob/export?format=markdown")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/markdown")
    text = await resp.text()
    assert text.startswith("# Learning session bob")
    assert "> Explain photosynthesis" in text and "> Plants turn light into sugar." in text
    resp = await client.get("/api/sessions/nobody/export")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "session_not_found"


async def test_storage_failure_is_503_not_500(client: TestClient) -> None:
    storage = client.server.app[STORAGE]
    await storage.captures.close()  # the database goes away under the API
    resp = await client.post("/api/search", json={"query": "anything"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "storage_unavailable"
    resp = await client.get("/api/stats")
    assert resp.status == 503
