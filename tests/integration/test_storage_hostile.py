"""Hostile search input through the real HTTP route: 200 or a clear 400, never 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from test_storage_support import make_client

HOSTILE_QUERIES = [
    '"',
    "'",
    "*",
    "OR",
    "NEAR(",
    "NEAR(a b, 3)",
    "\\",
    "a OR b AND NOT c",
    '"unbalanced',
    "col:term",
    "user_text:hack",
    "^start",
    "x" * 10_240,
    "word " * 2_000,
    "🙂🚀",
    "émoji 🙂 naïve",
    "'; DROP TABLE captures; --",
    "(((",
    "-minus +plus",
    "a & b | !c <-> d:*",
    "\x00",
    "%_%",
]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with make_client(tmp_path) as c:
        yield c


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_hostile_query_is_answered(client: TestClient, query: str) -> None:
    resp = await client.post("/api/search", json={"query": query, "limit": 5})
    body = await resp.json()
    if resp.status == 200:
        assert body["count"] == len(body["results"])
    else:
        assert resp.status == 400, body
        assert body["error"]["code"] and body["error"]["message"]


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"query": ""}, "invalid_query"),
        ({"query": "   "}, "invalid_query"),
        ({"query": 5}, "invalid_query"),
        ({}, "invalid_query"),
        ({"query": "x" * 20_001}, "query_too_long"),
        ({"query": "ok", "limit": 0}, "invalid_limit"),
        ({"query": "ok", "limit": 101}, "invalid_limit"),
        ({"query": "ok", "limit": True}, "invalid_limit"),
        ({"query": "ok", "limit": 2.5}, "invalid_limit"),
        ({"query": "ok", "session_id": "../etc"}, "invalid_session_id"),
        ({"query": "ok", "session_id": 7}, "invalid_session_id"),
        ({"query": "ok", "since": "yesterday"}, "invalid_since"),
        ({"query": "ok", "since": "0001-01-01T00:00:00+14:00"}, "invalid_since"),
        ({"query": "ok", "until": "9999-12-31T23:59:59-14:00"}, "invalid_until"),
        ({"query": "ok", "until": float("inf")}, "invalid_until"),
        ({"query": "ok", "since": 200, "until": 100}, "invalid_range"),
    ],
)
async def test_bad_search_body_is_a_clear_400(
    client: TestClient, payload: dict[str, object], code: str
) -> None:
    resp = await client.post("/api/search", json=payload)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"q"', b"\xff\xfe", b"null"])
async def test_non_object_json_is_400(client: TestClient, raw: bytes) -> None:
    resp = await client.post("/api/search", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"
