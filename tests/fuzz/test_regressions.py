"""What the fuzz campaign found (docs/reliability.md), each checked directly."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from loadtest.phone_sim import stream_parameters
from server.app import create_app
from server.appkeys import ENGINE
from server.settings import Settings
from server.transports.twilio_media import MAX_PAYLOAD_BYTES


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
        twilio_validate_signature=False,
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def url_of(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(("size", "ignored"), [(MAX_PAYLOAD_BYTES, 0), (MAX_PAYLOAD_BYTES + 1, 1),
                                               (MAX_PAYLOAD_BYTES + 2, 1)])  # fmt: skip
async def test_a_media_payload_over_a_second_is_ignored(
    server: TestServer, size: int, ignored: int
) -> None:
    """The base64 length check let payloads of 8001 and 8002 bytes through (more than a
    second of audio, which Twilio never sends)."""
    base = url_of(server)
    async with aiohttp.ClientSession() as http:
        form = {"CallSid": "CAsize"}
        async with http.post(f"{base}/twilio/voice", data=form) as resp:
            token = stream_parameters(await resp.text())["streamToken"]
        url = base.replace("http", "ws") + "/twilio/stream"
        async with http.ws_connect(url, autoping=False) as ws:
            start = {"callSid": "CAsize", "customParameters": {"streamToken": token}}
            await ws.send_str(json.dumps({"event": "start", "start": start}))
            payload = base64.b64encode(b"\xff" * size).decode()
            await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            await ws.ping()  # answered after the media was handled
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.PONG
            (call,) = server.app[ENGINE].lifecycle.transports
            assert call.ignored == ignored


@pytest.mark.parametrize(
    "first",
    [
        {"type": "start", "sample_rate": 11025},
        {"type": "start", "output_sample_rate": "16000"},
        {"type": "start", "mode": "ptt"},
        {"type": "start", "tts": "yes"},
    ],
)
async def test_a_new_learner_gets_its_credential_when_its_first_start_is_refused(
    server: TestServer, first: dict
) -> None:
    """A connection without a credential whose first message was a `start` with a bad
    field got its `error` but never its new learner's token: the session was owned by a
    learner nobody could present."""
    base = url_of(server)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/ws/fresh-1") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            await ws.send_str(json.dumps(first))
            credential = await ws.receive_json(timeout=5)
            error = await ws.receive_json(timeout=5)
            assert credential["type"] == "credential", credential
            assert (error["type"], error["code"]) == ("error", "invalid_message")
            headers = {"Authorization": f"Bearer {credential['learner_token']}"}
            async with http.get(f"{base}/api/me", headers=headers) as resp:
                assert resp.status == 200
        # The session is that learner's: it comes back with the credential.
        url = f"{base}/ws/fresh-1?token={credential['learner_token']}"
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
