"""A hostile client against the embedded defaults: each attack refused with its documented
error, while a well-behaved client on another address keeps its conversation.

Clients on "another address" really are: they connect from 127.0.0.2 (Linux routes all of
127.0.0.0/8 to loopback), so the server sees two peers, as it would two homes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import IDENTITY
from server.settings import Settings
from server.transports import twilio_media
from tests.fakes import fixtures
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.server_process import ServerProcess

ATTACKER = "127.0.0.1"
NEIGHBOUR = "127.0.0.2"
ADMIN_KEY = "abuse-test-admin-key-0123456789"
METRICS_TOKEN = "abuse-test-metrics-token-0123456789"


fake_anthropic = fixtures.fake_anthropic


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=0))


class Server:
    """The real app (scripted providers) on 127.0.0.1, reached from any loopback address."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        settings = Settings.from_env(
            {},
            database_path=str(tmp_path / "c.db"),
            admin_api_key=ADMIN_KEY,
            metrics_token=METRICS_TOKEN,
            embedder="static",
            **overrides,
        )
        providers = Providers(
            stt=ScriptedSTT([]), llm=ScriptedLLM("Noted. What next?"), tts=ToneTTS(0.05)
        )
        self.server = TestServer(create_app(settings, providers=providers), host="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def token(self, learner_id: str) -> str:
        return self.server.app[IDENTITY].tokens.issue(learner_id)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path)
    await srv.server.start_server()
    try:
        yield srv
    finally:
        await srv.server.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def limited_count(http: aiohttp.ClientSession, url: str, limit: str) -> float:
    resp = await http.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN))
    assert resp.status == 200
    for line in (await resp.text()).splitlines():
        if line.startswith(f'lva_limited_total{{limit="{limit}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def typed_turn(http: aiohttp.ClientSession, ws_url: str) -> float:
    """Open a voice connection, say one typed turn, hang up; seconds to the reply."""
    async with http.ws_connect(ws_url) as ws:
        ready = await ws.receive_json(timeout=5)
        assert ready["type"] == "ready", ready
        started = time.perf_counter()
        await ws.send_str(json.dumps({"type": "start", "tts": False}))
        await ws.send_str(json.dumps({"type": "text", "text": "hello there"}))
        async with asyncio.timeout(5):
            while (msg := await ws.receive_json())["type"] != "response_done":
                assert msg["type"] != "error", msg
        return time.perf_counter() - started


# --- slot exhaustion -------------------------------------------------------------------
@pytest.mark.slow
async def test_a_thousand_idle_sockets_from_one_address_leave_room_for_another(
    tmp_path: Path,
) -> None:
    """The real server process on its defaults (MAX_SESSIONS=1000): one address opens a
    thousand idle WebSockets and keeps them; a learner at another address still talks."""
    proc = ServerProcess(tmp_path, env={"REDIS_URL": "", "LOG_LEVEL": "warning"}).start()
    try:
        token = proc.learner()
        base = f"ws://127.0.0.1:{proc.port}/ws"
        async with session_from(NEIGHBOUR) as neighbour:
            idle_turn = await typed_turn(neighbour, f"{base}/calm-1?token={token}")
        held: list[aiohttp.ClientWebSocketResponse] = []
        codes: dict[int, int] = {}
        async with session_from(ATTACKER) as attacker:

            async def hold(i: int) -> None:
                ws = await attacker.ws_connect(f"{base}/idle-{i}")
                msg = await ws.receive(timeout=5)
                if msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "ready":
                    held.append(ws)  # admitted: it now says nothing, and holds its place
                    return
                if msg.type is aiohttp.WSMsgType.TEXT:  # refused: an error, then the close
                    assert json.loads(msg.data)["code"] == "rate_limited"
                    msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.CLOSE, msg
                codes[msg.data] = codes.get(msg.data, 0) + 1
                await ws.close()

            # Idle: no token, no message; each held socket waits for its first message.
            gate = asyncio.Semaphore(100)

            async def guarded(i: int) -> None:
                async with gate:
                    await hold(i)

            await asyncio.gather(*(guarded(i) for i in range(1000)))
            assert len(held) + sum(codes.values()) == 1000
            assert codes == {4429: 1000 - len(held)}
            assert 0 < len(held) <= 64  # MAX_SOCKETS_PER_ADDRESS
            async with session_from(NEIGHBOUR) as neighbour:
                busy_turn = await typed_turn(neighbour, f"{base}/calm-2?token={token}")
            for ws in held:
                await ws.close()
        assert busy_turn < 1.5 * idle_turn + 0.3, (idle_turn, busy_turn)
    finally:
        proc.stop()


# --- HTTP floods -----------------------------------------------------------------------
async def test_an_http_flood_from_one_address_is_limited_and_the_neighbour_is_served(
    tmp_path: Path,
) -> None:
    srv = Server(tmp_path, http_per_minute_per_address=60)  # 15 at once, then 1 a second
    await srv.server.start_server()
    try:
        async with session_from(ATTACKER) as attacker, session_from(NEIGHBOUR) as neighbour:
            statuses = []
            for _ in range(30):
                resp = await attacker.get(f"{srv.url}/health/ready")
                statuses.append(resp.status)
                if resp.status == 429:
                    body = await resp.json()
                    assert body["error"]["code"] == "rate_limited"
                    assert 1 <= int(resp.headers["Retry-After"]) <= 2
            assert statuses[:15] == [200] * 15 and statuses[15:] == [429] * 15
            resp = await neighbour.get(f"{srv.url}/health/ready")
            assert resp.status == 200
            # The page and its scripts are not counted: a class loading the page is not a flood.
            assert (await attacker.get(f"{srv.url}/")).status == 200
    finally:
        await srv.server.close()


async def test_forwarded_addresses_count_only_from_a_trusted_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="access")
    srv = Server(tmp_path, http_per_minute_per_address=60, trusted_proxies=("127.0.0.2/32",))
    await srv.server.start_server()
    try:
        url = f"{srv.url}/health/ready"
        async with session_from(NEIGHBOUR) as proxy, session_from(ATTACKER) as direct:
            # Through the proxy: each client has its own budget, whatever the proxy's address.
            for _ in range(15):
                assert (
                    await proxy.get(url, headers={"X-Forwarded-For": "203.0.113.5"})
                ).status == 200
            resp = await proxy.get(url, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"})
            assert resp.status == 429  # the rightmost untrusted hop is the client: .5 again
            for forwarded in ("198.51.100.7", "[2001:db8::7]:443"):
                resp = await proxy.get(url, headers={"X-Forwarded-For": forwarded})
                assert resp.status == 200
            # The proxies write X-Forwarded-For (FORWARDED_HEADER): a client's own
            # `Forwarded` is ignored, and the request counts as the proxy's own.
            resp = await proxy.get(url, headers={"Forwarded": "for=192.0.2.99"})
            assert resp.status == 200
            # Not from a trusted proxy: the header is the client's own writing, ignored.
            spoofed = [
                (await direct.get(url, headers={"X-Forwarded-For": f"192.0.2.{i}"})).status
                for i in range(20)
            ]
            assert spoofed.count(429) == 5
        remotes = {r.__dict__.get("remote") for r in caplog.records if r.name == "access"}
        assert {"203.0.113.5", "198.51.100.7", "2001:db8::7", "127.0.0.1"} <= remotes
        assert "127.0.0.2" in remotes  # the one request without X-Forwarded-For
        assert not remotes & {"192.0.2.99", "192.0.2.3"}
    finally:
        await srv.server.close()


async def test_typed_turns_and_searches_are_limited_per_learner(server: Server) -> None:
    a, b = server.token("learner-a"), server.token("learner-b")
    async with session_from(ATTACKER) as http:
        statuses = []
        for i in range(7):
            resp = await http.post(
                f"{server.url}/api/conversation",
                json={"text": f"turn {i}", "session_id": "a-typed"},
                headers=bearer(a),
            )
            statuses.append(resp.status)
        assert statuses == [200] * 5 + [429] * 2  # CONVERSATION_PER_MINUTE=20: 5 at once
        assert (await resp.json())["error"]["code"] == "rate_limited"
        resp = await http.post(
            f"{server.url}/api/conversation", json={"text": "hi"}, headers=bearer(b)
        )
        assert resp.status == 200  # another learner, same address: unaffected
        searches = [
            (
                await http.post(f"{server.url}/api/search", json={"query": "x"}, headers=bearer(a))
            ).status
            for _ in range(9)
        ]
        assert searches == [200] * 7 + [429] * 2  # SEARCH_PER_MINUTE=30: 7 at once
        assert await limited_count(http, server.url, "conversation") == 2
        assert await limited_count(http, server.url, "search") == 2


async def test_every_route_of_one_learner_shares_a_budget_whatever_the_address(
    tmp_path: Path,
) -> None:
    srv = Server(tmp_path, http_per_minute_per_learner=40)  # 10 at once
    await srv.server.start_server()
    try:
        token = srv.token("learner-c")
        async with session_from(ATTACKER) as one, session_from(NEIGHBOUR) as two:
            statuses = [
                (await http.get(f"{srv.url}/api/me", headers=bearer(token))).status
                for http in [one, two] * 6
            ]
            assert statuses == [200] * 10 + [429] * 2
            other = srv.token("learner-d")
            assert (await one.get(f"{srv.url}/api/me", headers=bearer(other))).status == 200
    finally:
        await srv.server.close()


async def test_json_bodies_must_say_they_are_json(server: Server) -> None:
    """A form post (which any page can send without asking) is refused before it is read."""
    async with session_from(ATTACKER) as http:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            resp = await http.post(
                f"{server.url}/api/conversation",
                data=json.dumps({"text": "hello"}),
                headers={"Content-Type": content_type},
            )
            assert resp.status == 415
            assert (await resp.json())["error"]["code"] == "unsupported_media_type"
        resp = await http.post(
            f"{server.url}/api/conversation",
            data=json.dumps({"text": "hello"}),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert resp.status == 200


# --- the browser edge --------------------------------------------------------------------
async def test_websockets_from_another_sites_page_are_refused(tmp_path: Path) -> None:
    srv = Server(tmp_path, allowed_origins=("https://app.example",))
    await srv.server.start_server()
    try:
        token = srv.token("learner-e")
        ws_url = f"{srv.url}/ws/origin-1?token={token}"
        async with session_from(ATTACKER) as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url, headers={"Origin": "https://evil.example"})
            assert refused.value.status == 403
            resp = await http.get(ws_url.replace("http", "http", 1), headers={
                "Origin": "https://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            })  # fmt: skip
            assert (await resp.json())["error"]["code"] == "origin_not_allowed"
            for origin in (srv.url, "https://app.example", None):
                headers = {"Origin": origin} if origin else {}
                async with http.ws_connect(ws_url, headers=headers) as ws:
                    assert (await ws.receive_json(timeout=5))["type"] == "ready"
    finally:
        await srv.server.close()


async def test_a_control_message_flood_is_dropped_and_the_session_goes_on(server: Server) -> None:
    token = server.token("learner-f")
    async with session_from(ATTACKER) as http:
        async with http.ws_connect(f"{server.url}/ws/flood-1?token={token}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            for _ in range(300):
                await ws.send_str('{"type":"ping"}')
            pongs, errors = 0, []
            with pytest.raises(TimeoutError):
                while True:
                    msg = await ws.receive_json(timeout=0.5)
                    if msg["type"] == "pong":
                        pongs += 1
                    else:
                        errors.append(msg)
            assert 40 <= pongs < 60  # a burst of 2 x WS_MESSAGES_PER_SECOND, then 20 a second
            assert [e["code"] for e in errors] == ["rate_limited"]  # told once, not 250 times
            await asyncio.sleep(1.0)
            await ws.send_str(json.dumps({"type": "text", "text": "still here?"}))
            async with asyncio.timeout(5):
                while (await ws.receive_json())["type"] != "response_done":
                    pass
        assert await limited_count(http, server.url, "ws_messages") >= 1


# --- the admin surface -------------------------------------------------------------------
async def test_the_operators_key_works_during_a_brute_force_run(server: Server) -> None:
    url = f"{server.url}/admin/api/maintenance"
    async with session_from(ATTACKER) as attacker, session_from(NEIGHBOUR) as operator:

        async def guess(i: int) -> int:
            resp = await attacker.get(url, headers={"X-Admin-Key": f"guess-{i:020d}"})
            return resp.status

        async def brute_force() -> list[int]:
            return [await guess(i) for i in range(60)]

        async def operate() -> list[int]:
            out = []
            for _ in range(20):
                out.append((await operator.get(url, headers={"X-Admin-Key": ADMIN_KEY})).status)
                out.append(
                    (
                        await operator.get(f"{server.url}/metrics", headers=bearer(METRICS_TOKEN))
                    ).status
                )
            return out

        guesses, operations = await asyncio.gather(brute_force(), operate())
        assert guesses[:9] == [401] * 9 and set(guesses[10:]) == {429}
        assert set(operations) == {200}
        # Even the attacking address's right key passes: no one's failures lock it out.
        assert (await attacker.get(url, headers={"X-Admin-Key": ADMIN_KEY})).status == 200
        # Failures against /metrics do not slow the admin key, and the other way round.
        resp = await attacker.get(f"{server.url}/metrics", headers=bearer("x" * 20))
        assert resp.status == 401
        assert await limited_count(operator, server.url, "admin_failures") >= 50


# --- cost ----------------------------------------------------------------------------------
async def test_long_turns_do_not_make_every_later_request_to_a_paid_model_longer(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    """Ten 4000-character typed turns: each request to the (wire-faithful) Anthropic API
    carries at most LLM_CONTEXT_MAX_CHARS of conversation, the newest first kept."""
    settings = Settings.from_env(
        {
            "LLM_PROVIDERS": "anthropic",
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
            "STT_PROVIDERS": "simulated",
            "TTS_PROVIDERS": "simulated",
        },
        database_path=str(tmp_path / "c.db"),
        embedder="static",
        conversation_per_minute=1000,
        llm_context_max_chars=20000,  # the fake echoes each turn: an exchange is ~8000 chars
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        token = server.app[IDENTITY].tokens.issue("learner-g")
        async with session_from(ATTACKER) as http:
            for i in range(10):
                resp = await http.post(
                    f"http://127.0.0.1:{server.port}/api/conversation",
                    json={"text": f"{i} " + "words " * 666, "session_id": "long-1"},
                    headers=bearer(token),
                )
                assert resp.status == 200, await resp.text()
        sent = [
            r["body"]["messages"] for r in fake_anthropic.requests if r["path"] == "/v1/messages"
        ]
        assert len(sent) == 10
        sizes = [sum(len(m["content"]) for m in messages) for messages in sent]
        assert max(sizes) <= settings.llm_context_max_chars
        last = sent[-1]
        assert last[-1]["content"].startswith("9 ") and last[-3]["content"].startswith("8 ")
        assert len(last) < 2 * 10 - 1  # the oldest turns were left out of the request
    finally:
        await server.close()


# --- ways around the limits, closed ---------------------------------------------------------
async def test_an_upgrade_header_does_not_exempt_an_api_request(tmp_path: Path) -> None:
    srv = Server(tmp_path, http_per_minute_per_address=8)  # 2 at once
    await srv.server.start_server()
    try:
        async with session_from(ATTACKER) as http:
            statuses = [
                (
                    await http.get(
                        f"{srv.url}/health/ready",
                        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
                    )
                ).status
                for _ in range(4)
            ]
            assert statuses == [200, 200, 429, 429]
    finally:
        await srv.server.close()


async def test_turns_without_a_credential_count_against_the_address(server: Server) -> None:
    async with session_from(ATTACKER) as attacker, session_from(NEIGHBOUR) as neighbour:
        url = f"{server.url}/api/conversation"
        statuses = [(await attacker.post(url, json={"text": "hi"})).status for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2  # a new learner each time, one address
        assert (await neighbour.post(url, json={"text": "hi"})).status == 200
        # Issuing anonymous learners is limited per address too (NEW_LEARNERS_PER_MINUTE=60,
        # all at once: a class opening the page together).
        issued = [(await attacker.post(f"{server.url}/api/learners")).status for _ in range(57)]
        assert issued == [201] * 55 + [429] * 2  # 5 already issued by the turns above
        assert (await neighbour.post(f"{server.url}/api/learners")).status == 201


async def test_typed_turns_over_the_websocket_share_the_learners_turn_budget(
    server: Server,
) -> None:
    token = server.token("learner-h")
    async with session_from(ATTACKER) as http:
        async with http.ws_connect(f"{server.url}/ws/turns-1?token={token}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            await ws.send_str(json.dumps({"type": "start", "tts": False}))
            await ws.receive_json(timeout=5)  # ready again
            for i in range(7):
                await ws.send_str(json.dumps({"type": "text", "text": f"turn {i}"}))
            finals, errors = 0, []
            with pytest.raises(TimeoutError):
                while True:
                    msg = await ws.receive_json(timeout=1.0)
                    if msg["type"] == "transcript" and msg["final"]:  # a turn taken
                        finals += 1
                    elif msg["type"] == "error":
                        errors.append(msg["code"])
            assert finals == 5 and errors == ["rate_limited"] * 2


async def test_the_operators_key_passes_when_its_address_has_spent_its_budget(
    tmp_path: Path,
) -> None:
    """Operator and attacker behind one address (a CDN without TRUSTED_PROXIES)."""
    srv = Server(tmp_path, http_per_minute_per_address=8)
    await srv.server.start_server()
    try:
        async with session_from(ATTACKER) as http:
            wrong = {"X-Admin-Key": "w" * 20}
            for _ in range(4):
                await http.get(f"{srv.url}/admin/api/maintenance", headers=wrong)
            resp = await http.get(f"{srv.url}/admin/api/maintenance", headers=wrong)
            assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limited"
            right = {"X-Admin-Key": ADMIN_KEY}
            assert (await http.get(f"{srv.url}/admin/api/maintenance", headers=right)).status == 200
            scrape = await http.get(f"{srv.url}/metrics", headers=bearer(METRICS_TOKEN))
            assert scrape.status == 200
    finally:
        await srv.server.close()


async def test_a_malformed_origin_is_refused_not_a_crash(server: Server) -> None:
    async with session_from(ATTACKER) as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{server.url}/ws/origin-2", headers={"Origin": "http://["})
        assert refused.value.status == 403


async def test_bad_binary_frames_are_not_answered_with_a_flood(server: Server) -> None:
    token = server.token("learner-i")
    async with session_from(ATTACKER) as http:
        async with http.ws_connect(f"{server.url}/ws/odd-1?token={token}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            for _ in range(500):
                await ws.send_bytes(b"\x01\x02\x03")  # odd length: not PCM16
            errors = 0
            with pytest.raises(TimeoutError):
                while True:
                    msg = await ws.receive_json(timeout=0.5)
                    assert msg["code"] == "invalid_audio"
                    errors += 1
            assert 40 <= errors <= 60  # the connection's message budget, not 500 replies


async def test_a_phone_stream_that_never_starts_is_closed_and_held_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed stream signature cannot pile up sockets: until a `start` brings its call's
    one-use token, the stream holds a place of its address, and it must start in time."""
    monkeypatch.setattr(twilio_media, "START_TIMEOUT_S", 1.0)
    srv = Server(tmp_path, twilio_validate_signature=False, max_sockets_per_address=2)
    await srv.server.start_server()
    try:
        async with session_from(ATTACKER) as http:
            stream = f"{srv.url}/twilio/stream"
            waiting = [await http.ws_connect(stream) for _ in range(2)]
            third = await http.ws_connect(f"{srv.url}/ws/after-streams")
            assert (await third.receive_json(timeout=5))["code"] == "rate_limited"
            for ws in waiting:
                msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4401
            async with http.ws_connect(f"{srv.url}/ws/after-streams") as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "ready"  # places back
    finally:
        await srv.server.close()
