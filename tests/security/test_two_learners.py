"""Two learners on one server. Everything the first review found learner B could do to
learner A's data, tried step by step; each step must be refused. Then the token cases, and
deletion end to end on SQLite and on Postgres with sessions in Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from pipelines.ports import Capture
from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import ENGINE, IDENTITY, STORAGE
from server.identity.tokens import AUDIENCE, ISSUER
from server.settings import Settings
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.pg import temp_database

REDIS_URL = "redis://127.0.0.1:6379/0"
A_SAID = "I am learning about spaced repetition and the forgetting curve"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with make_client(tmp_path) as c:
        yield c


class make_client:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        providers = Providers(stt=ScriptedSTT([]), llm=ScriptedLLM("Noted."), tts=ToneTTS(0.1))
        settings = Settings.from_env(
            {},
            database_path=str(tmp_path / "c.db"),
            capture_flush_ms=10,
            embedder="static",
            **overrides,
        )
        self.client = TestClient(TestServer(create_app(settings, providers=providers)))

    async def __aenter__(self) -> TestClient:
        await self.client.start_server()
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


async def say(client: TestClient, text: str, token: str | None = None, sid: str | None = None):
    body: dict[str, Any] = {"text": text}
    if sid:
        body["session_id"] = sid
    resp = await client.post("/api/conversation", json=body, headers=bearer(token) if token else {})
    return resp.status, await resp.json()


async def flushed(client: TestClient) -> None:
    """Wait until the capture writer has written everything queued."""
    writer = client.server.app[STORAGE].writer
    async with asyncio.timeout(5):
        while writer.depth:  # noqa: ASYNC110 (the writer's own queue)
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)


async def learner_a(client: TestClient) -> tuple[str, str]:
    """Learner A says something; returns (token, session id)."""
    status, body = await say(client, A_SAID)
    assert status == 200
    await flushed(client)
    return body["learner_token"], body["session_id"]


async def ws_outcome(client: TestClient, path: str) -> tuple[list[dict], int | None]:
    """The JSON messages a WebSocket got, and its close code."""
    got: list[dict] = []
    async with client.ws_connect(path) as ws:
        async with asyncio.timeout(5):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    got.append(json.loads(msg.data))
                    if got[-1]["type"] == "ready":
                        await ws.send_json({"type": "text", "text": "what did A say?"})
        return got, ws.close_code


# --- the two-learner attack, step by step --------------------------------------------
async def test_b_cannot_search_read_export_write_or_join_a(client: TestClient) -> None:
    a_token, a_sid = await learner_a(client)
    b = (await (await client.post("/api/learners")).json())["learner_token"]

    # 1. Search "everything": B finds only B's (nothing); A finds A's.
    resp = await client.post(
        "/api/search", json={"query": "learn", "limit": 100}, headers=bearer(b)
    )
    assert resp.status == 200 and (await resp.json())["results"] == []
    resp = await client.post(
        "/api/search", json={"query": "spaced repetition", "limit": 100}, headers=bearer(a_token)
    )
    assert [r["session_id"] for r in (await resp.json())["results"]] == [a_sid]
    # ... nor by naming A's session.
    resp = await client.post(
        "/api/search", json={"query": "learn", "session_id": a_sid}, headers=bearer(b)
    )
    assert resp.status == 404

    # 2. A's history and export: 404 for B, exactly like a session that does not exist.
    for path in (f"/api/sessions/{a_sid}/history", f"/api/sessions/{a_sid}/export"):
        theirs = await client.get(path, headers=bearer(b))
        missing = await client.get(path.replace(a_sid, "no-such-session"), headers=bearer(b))
        assert theirs.status == missing.status == 404
        assert await theirs.json() == await missing.json()
        assert (await client.get(path, headers=bearer(a_token))).status == 200

    # 3. Writing into A's conversation: refused, with or without a credential; A's context
    # (what A's next reply reads) is untouched.
    for headers in (bearer(b), {}):
        resp = await client.post(
            "/api/conversation", json={"session_id": a_sid, "text": "ignore A"}, headers=headers
        )
        assert resp.status == 404
    context = await client.server.app[STORAGE].sessions.get_context(a_sid)
    assert [ex.user for ex in context] == [A_SAID]

    # 4. Joining A's session over the WebSocket: closed 4404 before anything is processed.
    for path in (f"/ws/{a_sid}?token={b}", f"/ws/{a_sid}"):
        got, code = await ws_outcome(client, path)
        assert code == 4404, (path, got)
        assert [m["type"] for m in got if m["type"] != "ready"] == ["error"]
        assert got[-1]["code"] == "session_not_found"
    assert [ex.user for ex in await client.server.app[STORAGE].sessions.get_context(a_sid)] == [
        A_SAID
    ]

    # 5. A still has it all, and B's own session list is empty.
    mine = await (await client.get("/api/sessions", headers=bearer(a_token))).json()
    assert [s["session_id"] for s in mine["sessions"]] == [a_sid]
    assert mine["sessions"][0]["title"].startswith("I am learning")
    theirs = await (await client.get("/api/sessions", headers=bearer(b))).json()
    assert theirs == {"sessions": [], "count": 0}


async def test_a_phone_callers_session_is_not_reachable_from_the_web(client: TestClient) -> None:
    app = client.server.app
    phone = app[IDENTITY].caller("+15550001111")
    owner = await app[STORAGE].captures.claim_session("call-CA123", phone.id)
    assert owner == phone.id and "15550001111" not in owner
    b = (await (await client.post("/api/learners")).json())["learner_token"]
    assert (await client.get("/api/sessions/call-CA123/history", headers=bearer(b))).status == 404
    _, code = await ws_outcome(client, f"/ws/call-CA123?token={b}")
    assert code == 4404


async def test_a_learner_resumes_their_own_session_over_the_websocket(client: TestClient) -> None:
    a_token, a_sid = await learner_a(client)
    async with client.ws_connect(f"/ws/{a_sid}?token={a_token}") as ws:
        ready = await ws.receive_json(timeout=5)
        assert ready["type"] == "ready" and "learner_token" not in ready
        await ws.send_json({"type": "start", "tts": False})
        assert (await ws.receive_json(timeout=5))["type"] == "ready"
        await ws.send_json({"type": "text", "text": "and interleaving"})
        async with asyncio.timeout(5):
            while (await ws.receive_json())["type"] != "response_done":
                pass
    await flushed(client)
    history = await client.get(f"/api/sessions/{a_sid}/history", headers=bearer(a_token))
    assert [c["user_text"] for c in (await history.json())["captures"]] == [
        A_SAID,
        "and interleaving",
    ]


async def test_a_token_in_start_resumes_and_a_new_client_gets_one(client: TestClient) -> None:
    a_token, a_sid = await learner_a(client)
    # The token in `start` (no ?token=): the session is A's again.
    async with client.ws_connect(f"/ws/{a_sid}") as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"type": "start", "tts": False, "token": a_token})
        ready = await ws.receive_json(timeout=5)
        assert ready["type"] == "ready" and "learner_token" not in ready
    # No credential at all: a new anonymous learner, whose token comes in `ready`.
    sid = uuid.uuid4().hex
    async with client.ws_connect(f"/ws/{sid}") as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"type": "start", "tts": False})
        ready = await ws.receive_json(timeout=5)
        token = ready["learner_token"]
    me = await (await client.get("/api/me", headers=bearer(token))).json()
    assert me["learner_id"].startswith("anon_")
    assert (await client.get(f"/api/sessions/{sid}/history", headers=bearer(token))).status == 200


# --- tokens -------------------------------------------------------------------------
def forged(secret: bytes, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "anon_x", "iat": now, "exp": now + 60}
    return jwt.encode({**body, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda key: None, "missing_credential"),
        (lambda key: "Basic dXNlcjpwdw==", "invalid_credential"),
        (lambda key: "Bearer not.a.token", "invalid_token"),
        (lambda key: "Bearer " + forged(key, exp=int(time.time()) - 3600), "token_expired"),
        (lambda key: "Bearer " + forged(b"k" * 48), "invalid_token"),
        (lambda key: "Bearer " + forged(key, aud="someone-else"), "invalid_token"),
        (
            lambda key: (
                "Bearer eyJhbGciOiJub25lIn0."
                + "eyJzdWIiOiJhbm9uX3giLCJpc3MiOiJsZWFybmluZy12b2ljZS1hZ2VudCIsImF1ZCI6ImxlYXJuZXIi"
                + "LCJpYXQiOjEsImV4cCI6OTk5OTk5OTk5OX0."
            ),
            "invalid_token",
        ),
    ],
    ids=["missing", "not-bearer", "malformed", "expired", "wrong-key", "wrong-audience", "none"],
)
async def test_bad_credentials_get_401_json_never_500(client: TestClient, make, code) -> None:
    key = client.server.app[IDENTITY].tokens._secret
    header = make(key)
    headers = {"Authorization": header} if header else {}
    for method, path, body in (
        ("POST", "/api/search", {"query": "x"}),
        ("GET", "/api/sessions", None),
        ("GET", "/api/me/export", None),
        ("DELETE", "/api/me", None),
    ):
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 401, (path, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == code
        assert "WWW-Authenticate" in resp.headers
        if header:
            assert header.split(" ", 1)[-1][:20] not in error["message"]


async def test_a_websocket_with_a_bad_token_is_closed_4401_before_any_audio(
    client: TestClient,
) -> None:
    stt = client.server.app[ENGINE].providers.stt
    async with client.ws_connect("/ws/bad-token-session?token=not.a.token") as ws:
        await ws.send_bytes(b"\x00\x01" * 320)
        got = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 4401
    assert [m["type"] for m in got] == ["error"] and got[0]["code"] == "invalid_token"
    assert stt.streams == [] and stt.pushed_frames == []  # no session, no audio heard


async def test_a_bad_token_in_start_is_refused_before_its_audio(client: TestClient) -> None:
    async with client.ws_connect("/ws/late-bad-token") as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"type": "start", "token": "forged.token.here"})
        await ws.send_bytes(b"\x00\x01" * 320)
        got = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 4401
    assert got[-1]["code"] == "invalid_token"


# --- deletion and retention ----------------------------------------------------------
async def test_delete_a_session_removes_it_everywhere(client: TestClient) -> None:
    a_token, a_sid = await learner_a(client)
    _, kept = await say(client, "A second session about photosynthesis", a_token)
    await flushed(client)
    storage = client.server.app[STORAGE]
    b = (await (await client.post("/api/learners")).json())["learner_token"]
    assert (await client.delete(f"/api/sessions/{a_sid}", headers=bearer(b))).status == 404

    resp = await client.delete(f"/api/sessions/{a_sid}", headers=bearer(a_token))
    assert resp.status == 200 and (await resp.json())["captures_deleted"] == 1
    assert await storage.sessions.get_context(a_sid) == []
    search = await client.post(
        "/api/search", json={"query": "spaced repetition"}, headers=bearer(a_token)
    )
    assert a_sid not in {r["session_id"] for r in (await search.json())["results"]}
    listed = await (await client.get("/api/sessions", headers=bearer(a_token))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [kept["session_id"]]
    # A late copy (another instance's journal) does not bring it back.
    storage.writer.submit(Capture(a_sid, "late", "copy", time.time(), {}, learner_id="x"))
    await flushed(client)
    assert await storage.captures.history(a_sid, 10) == []


async def test_forget_me_removes_everything_and_refuses_the_token(client: TestClient) -> None:
    a_token, a_sid = await learner_a(client)
    _, b_body = await say(client, "B is learning to juggle")
    await flushed(client)
    storage = client.server.app[STORAGE]
    resp = await client.delete("/api/me", headers=bearer(a_token))
    assert resp.status == 200 and (await resp.json())["captures_deleted"] == 1
    resp = await client.get("/api/sessions", headers=bearer(a_token))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "learner_forgotten"
    assert await storage.captures.history(a_sid, 10) == []
    assert await storage.sessions.get_context(a_sid) == []
    _, code = await ws_outcome(client, f"/ws/{a_sid}?token={a_token}")
    assert code == 4401
    # B is untouched.
    b_token = b_body["learner_token"]
    found = await client.post("/api/search", json={"query": "juggle"}, headers=bearer(b_token))
    assert len((await found.json())["results"]) == 1


async def test_export_of_everything_i_said(client: TestClient) -> None:
    a_token, _ = await learner_a(client)
    await say(client, "Second session: the Krebs cycle", a_token)
    await say(client, "B says something else")
    await flushed(client)
    resp = await client.get("/api/me/export?format=markdown", headers=bearer(a_token))
    text = await resp.text()
    assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
    assert "spaced repetition" in text and "Krebs cycle" in text and "B says" not in text
    assert resp.headers["Cache-Control"] == "no-store"


async def test_retention_deletes_old_captures_in_the_background(tmp_path: Path) -> None:
    async with make_client(tmp_path, capture_retention_days=30) as client:
        _, sid = await learner_a(client)
        storage = client.server.app[STORAGE]
        old = time.time() - 40 * 86400
        storage.writer.submit(Capture(sid, "an old thought", "old", old, {}, learner_id=""))
        await flushed(client)
        assert len(await storage.captures.history(sid, 10)) == 2
    # The retention task runs at start-up (then hourly): a restart applies it.
    async with make_client(tmp_path, capture_retention_days=30) as client:
        storage = client.server.app[STORAGE]
        async with asyncio.timeout(5):
            while len(await storage.captures.history(sid, 10)) != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        rows = await storage.captures.history(sid, 10)
        assert [c.user_text for c in rows] == [A_SAID]
        metrics = await (await client.get("/metrics")).text()
        assert 'lva_captures_deleted_total{kind="retention"} 1.0' in metrics


async def test_deletion_on_postgres_and_redis(tmp_path: Path) -> None:
    prefix = f"lva_test_{uuid.uuid4().hex[:10]}:"
    async with temp_database() as dsn:
        overrides = {"database_url": dsn, "redis_url": REDIS_URL, "redis_key_prefix": prefix}
        async with make_client(tmp_path, **overrides) as client:
            token, sid = await learner_a(client)
            me = await (await client.get("/api/me", headers=bearer(token))).json()
            redis = aioredis.from_url(REDIS_URL)
            try:
                assert await redis.exists(f"{prefix}session:{sid}:context") == 1
                resp = await client.delete("/api/me", headers=bearer(token))
                assert resp.status == 200 and (await resp.json())["captures_deleted"] == 1
                left = {k async for k in redis.scan_iter(match=f"{prefix}*")}
                # Rate-limit counters are keyed by a hash, hold no words and expire in a minute.
                left = {k for k in left if not k.startswith(f"{prefix}limit:".encode())}
                assert left == {f"{prefix}session:{sid}:deleted".encode()}  # only the tombstone
            finally:
                await redis.aclose()
            captures = client.server.app[STORAGE].captures
            assert await captures.history(sid, 10) == []
            assert await captures.is_forgotten(me["learner_id"])
            resp = await client.get("/api/me", headers=bearer(token))
            assert resp.status == 401


async def test_the_page_and_private_answers_carry_their_headers(client: TestClient) -> None:
    page = await client.get("/", headers={"Accept": "text/html"})
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["Vary"] == "Accept"
    assert (await client.get("/")).headers["Vary"] == "Accept"
    token, sid = await learner_a(client)
    resp = await client.get(f"/api/sessions/{sid}/history", headers=bearer(token))
    assert resp.headers["Cache-Control"] == "no-store"


async def test_an_identity_providers_token_names_the_learner_end_to_end(tmp_path: Path) -> None:
    from aiohttp import web

    from tests.security.test_credentials import AUD, ISS, Provider

    provider = Provider()
    jwks_app = web.Application()

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(provider.jwks())

    jwks_app.router.add_get("/jwks", jwks)
    jwks_server = TestServer(jwks_app, host="127.0.0.1")
    await jwks_server.start_server()
    oidc = {
        "oidc_issuer": ISS,
        "oidc_audience": AUD,
        "oidc_jwks_url": f"http://127.0.0.1:{jwks_server.port}/jwks",
    }
    try:
        async with make_client(tmp_path, **oidc) as client:
            token = provider.token(sub="ada@example.com")
            me = await (await client.get("/api/me", headers=bearer(token))).json()
            assert me["learner_id"].startswith("oidc_") and "ada" not in me["learner_id"]
            status, body = await say(client, "Lovelace notes on the analytical engine", token)
            assert status == 200 and "learner_token" not in body
            await flushed(client)
            # The same person on another device (another token, same subject) sees it.
            again = provider.token(sub="ada@example.com")
            found = await client.post("/api/search", json={"query": "analytical engine"},
                                      headers=bearer(again))  # fmt: skip
            assert [r["session_id"] for r in (await found.json())["results"]] == [
                body["session_id"]
            ]
            # Another subject does not; a token for another audience is refused.
            other = provider.token(sub="bob@example.com")
            found = await client.post(
                "/api/search", json={"query": "analytical engine"}, headers=bearer(other)
            )
            assert (await found.json())["results"] == []
            wrong = provider.token(sub="ada@example.com", aud="another-app")
            assert (await client.get("/api/me", headers=bearer(wrong))).status == 401
            # The server's own anonymous tokens still work beside the provider's.
            anon = (await (await client.post("/api/learners")).json())["learner_token"]
            assert (await client.get("/api/me", headers=bearer(anon))).status == 200
    finally:
        await jwks_server.close()


async def test_with_both_stores_down_no_session_is_handed_out(tmp_path: Path) -> None:
    """The capture store cannot claim and Redis cannot say whether the id has context:
    refused (4503), never admitted on an empty answer."""
    from server.identity.admission import SessionAuthority
    from server.identity.setup import build_identity
    from server.storage.redis_sessions import RedisSessionStore
    from server.transports.base import Refused

    class Down:
        async def claim_session(self, session_id: str, learner_id: str) -> str:
            raise ConnectionRefusedError("database down")

    async def never(learner_id: str) -> bool:
        return False

    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"))
    identity = build_identity(settings, never)
    dead_redis = RedisSessionStore("redis://127.0.0.1:1/0", 60, 10)
    try:
        authority = SessionAuthority(identity, Down(), dead_redis)
        with pytest.raises(Refused) as info:
            await authority.admit("someone-elses-session", None, None)
        assert info.value.refusal.code == 4503
        assert info.value.refusal.error == "storage_unavailable"
    finally:
        await dead_redis.close()
