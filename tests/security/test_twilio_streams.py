"""Phone streams: only the call Twilio was told about, once. The stream's upgrade signature
covers a URL that is the same for every call, so `POST /twilio/voice` gives each call a
one-use token bound to its CallSid; a replayed, foreign, expired or missing token opens
nothing. Real servers (create_app, aiohttp's test server), the phone simulator as Twilio,
the real Redis on 127.0.0.1:6379 for the record shared by instances."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
import websockets
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from loadtest.phone_sim import PhoneCall, stream_parameters
from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import ENGINE, IDENTITY
from server.settings import ConfigError, Settings
from server.transports import twilio_media
from server.transports.twilio_tokens import (
    KEY_PURPOSE,
    TOKEN_PARAM,
    MemoryUsedTokens,
    RedisUsedTokens,
    StreamGate,
    StreamTokens,
    TokenRefused,
)
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.server_process import ROOT
from tests.speech import silence, synth

AUTH_TOKEN = "twilio-auth-token-for-tests"
SECRET = "s" * 48
REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


# --- the pure core -------------------------------------------------------------------
def test_a_token_opens_its_own_call_until_it_expires() -> None:
    clock = Clock()
    tokens = StreamTokens(KEY, 60, clock)
    token = tokens.issue("CAaaa")
    valid = tokens.check(token, "CAaaa")
    assert valid.expires_at == int(clock.now) + 60 and len(token) < 100
    clock.now += 59
    tokens.check(token, "CAaaa")
    clock.now += 1
    with pytest.raises(TokenRefused) as info:
        tokens.check(token, "CAaaa")
    assert info.value.code == "token_expired"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda t: t.issue("CAaaa"), "token_invalid"),  # checked against CAbbb below
        (lambda t: StreamTokens(b"x" * 32, 60, Clock()).issue("CAbbb"), "token_invalid"),
        (lambda t: t.issue("CAbbb").replace(".19", ".29", 1), "token_invalid"),  # later expiry
        (lambda t: None, "token_missing"),
        (lambda t: "", "token_missing"),
        (lambda t: 12345, "token_missing"),
        (lambda t: "v1.abc.def.ghi", "token_malformed"),
        (lambda t: "v2" + t.issue("CAbbb")[2:], "token_malformed"),
        (lambda t: t.issue("CAbbb") + "." * 200, "token_malformed"),
    ],
    ids=["other-call", "other-key", "tampered-expiry", "none", "empty", "not-text",
         "garbage", "other-version", "huge"],
)  # fmt: skip
def test_forged_foreign_and_malformed_tokens_are_refused(make, code) -> None:
    tokens = StreamTokens(KEY, 60, Clock())
    with pytest.raises(TokenRefused) as info:
        tokens.check(make(tokens), "CAbbb")
    assert info.value.code == code


async def test_a_token_opens_one_stream_only() -> None:
    gate = StreamGate(StreamTokens(KEY, 60), MemoryUsedTokens())
    token = gate.issue("CAaaa")
    await gate.admit(token, "CAaaa")
    with pytest.raises(TokenRefused) as info:
        await gate.admit(token, "CAaaa")
    assert info.value.code == "token_used"


async def test_the_used_record_is_bounded_and_refuses_rather_than_forgets() -> None:
    clock = Clock()
    used = MemoryUsedTokens(max_entries=3, clock=clock)
    expiry = int(clock.now) + 60
    assert all([await used.claim(f"n{i}", expiry) for i in range(3)])
    assert not await used.claim("n3", expiry)  # full of live tokens: refused, none forgotten
    assert not await used.claim("n0", expiry)
    clock.now += 61  # they have expired: room again
    assert await used.claim("n3", int(clock.now) + 60) and len(used) == 1


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"lva_test_{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_token_used_on_one_instance_is_refused_on_another(redis_prefix) -> None:
    clients = [aioredis.from_url(REDIS_URL), aioredis.from_url(REDIS_URL)]
    try:
        a, b = (StreamGate(StreamTokens(KEY, 60), RedisUsedTokens(c, redis_prefix))
                for c in clients)  # fmt: skip
        token = a.issue("CAaaa")
        await a.admit(token, "CAaaa")
        with pytest.raises(TokenRefused) as info:
            await b.admit(token, "CAaaa")
        assert info.value.code == "token_used"
        nonce = token.split(".")[2]
        ttl = await clients[0].ttl(f"{redis_prefix}twilio:stream-token:{nonce}")
        assert 0 < ttl <= 60  # the record goes when the token would have expired anyway
    finally:
        for c in clients:
            await c.aclose()


async def test_with_redis_away_the_local_record_still_refuses_a_replay(caplog) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        gate = StreamGate(StreamTokens(KEY, 60), RedisUsedTokens(dead))
        token = gate.issue("CAaaa")
        await gate.admit(token, "CAaaa")  # the call still connects
        with pytest.raises(TokenRefused):
            await gate.admit(token, "CAaaa")
    finally:
        await dead.aclose()
    assert "stream token record in Redis unavailable" in caplog.text


# --- the real server -----------------------------------------------------------------
def _settings(tmp_path, **overrides) -> Settings:
    values = {
        "twilio_auth_token": AUTH_TOKEN,
        "auth_secret": SECRET,
        "database_path": str(tmp_path / f"{uuid.uuid4().hex}.db"),
        **overrides,
    }
    return Settings.from_env({}, **values)


async def _serve(settings: Settings) -> TestServer:
    stt = ScriptedSTT(["count for me"], interim_every=1000)
    providers = Providers(stt=stt, llm=ScriptedLLM("One two three."), tts=ToneTTS(0.5))
    server = TestServer(create_app(settings, providers=providers), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def phone(tmp_path) -> AsyncIterator[TestServer]:
    server = await _serve(_settings(tmp_path))
    try:
        yield server
    finally:
        await server.close()


def _stream_url(server: TestServer) -> str:
    return f"ws://127.0.0.1:{server.port}/twilio/stream"


def _sign(url: str, params: dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params)


async def _answer(server: TestServer, call_sid: str, headers=None) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}/twilio/voice"
    form = {"CallSid": call_sid, "From": "+15550102030"}
    headers = {"X-Twilio-Signature": _sign(url, form), **(headers or {})}
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as r:
        return r.status, await r.text()


async def _token(server: TestServer, call_sid: str) -> str:
    status, body = await _answer(server, call_sid)
    assert status == 200, body
    return stream_parameters(body)[TOKEN_PARAM]


async def _open_stream(server: TestServer, call_sid: str, params: dict) -> int | None:
    """Open a signed stream and send `start`; the close code if the server closes it
    (None: the call is up, and is hung up here)."""
    url = _stream_url(server)
    headers = {"X-Twilio-Signature": _sign(url, {})}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
        start = {"streamSid": "MZ1", "callSid": call_sid, "customParameters": params,
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}  # fmt: skip
        await ws.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": start}))
        try:
            await asyncio.wait_for(ws.recv(), 1.0)
        except TimeoutError:  # nothing said and still open: the session is live
            await ws.send(json.dumps({"event": "stop"}))
            return None
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


async def test_the_legitimate_call_holds_a_conversation(phone) -> None:
    """The simulator answers like Twilio (signed webhook, token from the TwiML)."""
    async with PhoneCall(_stream_url(phone), auth_token=AUTH_TOKEN) as call:
        _, end = await call.say(synth("Count for me please.", 8000) + silence(0.8, 8000))
        await call.wait_media(end - 0.8, timeout=10)
    assert call.parameters[TOKEN_PARAM].startswith("v1.")
    assert call.rx.media


async def test_a_replayed_stream_is_refused(phone, caplog) -> None:
    caplog.set_level(logging.INFO)
    token = await _token(phone, "CAreplay")
    params = {TOKEN_PARAM: token, "callSid": "CAreplay"}
    assert await _open_stream(phone, "CAreplay", params) is None  # the first use: admitted
    assert await _open_stream(phone, "CAreplay", params) == 4401
    assert "twilio stream refused: the stream token has already opened a stream" in caplog.text


async def test_a_token_of_one_call_does_not_open_another(phone, caplog) -> None:
    caplog.set_level(logging.INFO)
    token = await _token(phone, "CAalice")
    assert await _open_stream(phone, "CAbob", {TOKEN_PARAM: token}) == 4401
    assert "not issued by this server for this call" in caplog.text
    assert not phone.app[ENGINE].lifecycle.sessions
    # ... and the refusal did not spend it: Alice's own stream still opens.
    assert await _open_stream(phone, "CAalice", {TOKEN_PARAM: token}) is None


async def test_an_expired_token_is_refused(phone, caplog) -> None:
    caplog.set_level(logging.INFO)
    key = phone.app[IDENTITY].derived_key(KEY_PURPOSE)
    old = StreamTokens(key, 60, clock=lambda: time.time() - 61).issue("CAlate")
    assert await _open_stream(phone, "CAlate", {TOKEN_PARAM: old}) == 4401
    assert "the stream token has expired" in caplog.text


async def test_a_start_without_a_token_is_refused(phone, caplog) -> None:
    caplog.set_level(logging.INFO)
    assert await _open_stream(phone, "CAnone", {"callSid": "CAnone"}) == 4401
    assert await _open_stream(phone, "CAnone", {TOKEN_PARAM: "v1.1.2.3"}) == 4401
    assert "the stream's start carries no token" in caplog.text
    assert not phone.app[ENGINE].lifecycle.sessions


async def test_a_token_is_required_with_signature_checks_off_too(tmp_path) -> None:
    server = await _serve(_settings(tmp_path, twilio_validate_signature=False))
    try:
        assert await _open_stream(server, "CAopen", {}) == 4401
        async with PhoneCall(_stream_url(server), call_sid="CAopen") as call:
            _, end = await call.say(synth("Count for me please.", 8000) + silence(0.8, 8000))
            await call.wait_media(end - 0.8, timeout=10)
    finally:
        await server.close()


async def test_a_replay_to_another_instance_is_refused(tmp_path, redis_prefix) -> None:
    """Two instances sharing Redis and the secret: the token Twilio used on one is spent
    on the other."""
    shared = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}
    a = await _serve(_settings(tmp_path, **shared))
    b = await _serve(_settings(tmp_path, **shared))
    try:
        token = await _token(a, "CAtwice")
        assert await _open_stream(a, "CAtwice", {TOKEN_PARAM: token}) is None
        assert await _open_stream(b, "CAtwice", {TOKEN_PARAM: token}) == 4401
    finally:
        await a.close()
        await b.close()


async def test_only_a_signed_stream_is_exempt_from_per_address_limits(tmp_path, monkeypatch):
    seen: list[bool] = []
    real = twilio_media.TwilioCall.accept

    async def accept(self):
        seen.append(self.address_limited)
        return await real(self)

    monkeypatch.setattr(twilio_media.TwilioCall, "accept", accept)
    for validate in (True, False):
        server = await _serve(_settings(tmp_path, twilio_validate_signature=validate))
        try:
            await _open_stream(server, "CAlimits", {})
        finally:
            await server.close()
    assert seen == [False, True]


async def test_forwarded_headers_do_not_choose_the_signed_url(phone) -> None:
    """With PUBLIC_URL unset the signed URL is the request's own: a signature made for a
    URL named in X-Forwarded-* headers does not pass."""
    form = {"CallSid": "CAfwd", "From": "+15550102030"}
    url = f"http://127.0.0.1:{phone.port}/twilio/voice"
    evil = "https://attacker.example/twilio/voice"
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "attacker.example",
               "X-Twilio-Signature": _sign(evil, form)}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form, headers=headers) as r:
            assert r.status == 403
        headers["X-Twilio-Signature"] = _sign(url, form)
        async with http.post(url, data=form, headers=headers) as r:
            body = await r.text()
            assert r.status == 200
    assert f'<Stream url="ws://127.0.0.1:{phone.port}/twilio/stream">' in body


# --- PUBLIC_URL ----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "voice.example.com"])
def test_public_url_is_required_off_loopback_when_phone_calls_are_on(host) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        Settings.from_env({"HOST": host, "TWILIO_AUTH_TOKEN": AUTH_TOKEN})


@pytest.mark.parametrize(
    "env",
    [
        {"HOST": "127.0.0.1", "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
        {"HOST": "::1", "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
        {"HOST": "localhost", "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
        {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_URL": "https://v.example"},
        # No phone calls configured (every /twilio request is 403 twilio_not_configured).
        {"HOST": "0.0.0.0"},
        {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_VALIDATE_SIGNATURE": "false"},
    ],
)
def test_public_url_may_be_omitted_otherwise(env) -> None:
    Settings.from_env(env)


def test_the_server_does_not_start_off_loopback_without_public_url(tmp_path) -> None:
    env = {"PATH": "", "PYTHONPATH": str(ROOT), "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "DATABASE_PATH": str(tmp_path / "c.db")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "server", "--host", "0.0.0.0", "--port", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr and "PUBLIC_URL" in done.stderr
