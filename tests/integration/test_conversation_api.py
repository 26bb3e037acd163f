"""POST /api/conversation in-process: a model that never answers gets a clear 504, and the
session context is shared with the next typed turn."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from pipelines.registry import Providers
from server.app import create_app
from server.routes import core
from server.settings import Settings
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS


class HangingLLM(ScriptedLLM):
    async def stream(self, user_text, history):
        self.calls.append((user_text, list(history)))
        await asyncio.sleep(3600)
        yield ""


async def _client(tmp_path, llm) -> TestClient:
    providers = Providers(stt=ScriptedSTT([]), llm=llm, tts=ToneTTS(0.1))
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"))
    client = TestClient(TestServer(create_app(settings, providers=providers)))
    await client.start_server()
    return client


async def test_a_model_that_never_answers_gets_504(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "REPLY_TIMEOUT_S", 0.3)
    client = await _client(tmp_path, HangingLLM())
    try:
        resp = await client.post("/api/conversation", json={"text": "hello?"})
        body = await resp.json()
        assert resp.status == 504 and body["error"]["code"] == "reply_timeout"
    finally:
        await client.close()


async def test_typed_turns_share_the_session_context(tmp_path):
    llm = ScriptedLLM("Noted.")
    client = await _client(tmp_path, llm)
    try:
        first = await (await client.post("/api/conversation", json={"text": "one"})).json()
        sid, token = first["session_id"], first["learner_token"]
        mine = {"Authorization": f"Bearer {token}"}
        resp = await client.post(
            "/api/conversation", json={"session_id": sid, "text": "two"}, headers=mine
        )
        assert resp.status == 200 and (await resp.json())["agent_text"] == "Noted."
        assert "learner_token" not in await resp.json()  # the caller has one
        assert [(x.user, x.agent) for x in llm.calls[1][1]] == [("one", "Noted.")]
        # Without the credential the same session id is someone else's: as if it did not exist.
        resp = await client.post("/api/conversation", json={"session_id": sid, "text": "three"})
        assert resp.status == 404 and len(llm.calls) == 2
    finally:
        await client.close()
