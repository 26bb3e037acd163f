"""What the fuzz campaign found (docs/reliability.md), each checked directly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.settings import Settings


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
