"""OpenAIEmbedder against a loopback server speaking OpenAI's embeddings wire protocol."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipelines.ports import Capture
from server.settings import ConfigError, Settings
from server.storage.base import SearchQuery
from server.storage.embedder_openai import OpenAIEmbedder
from server.storage.factory import open_storage
from server.storage.hybrid import HybridStore
from server.storage.sqlite import SQLiteCaptureStore

KEY = "sk-test-embeddings"


def bag_of_words(text: str, dim: int) -> list[float]:
    """A deterministic stand-in for the model: hashed word counts."""
    v = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return v


class FakeOpenAIEmbeddings:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/embeddings", self.embeddings)

    @staticmethod
    def error(status: int, message: str, kind: str, code: str | None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status)

    async def embeddings(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return self.error(
                401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"
            )
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if any(not isinstance(t, str) or not t for t in inputs):
            return self.error(400, "'$.input' is invalid.", "invalid_request_error", None)
        dim = int(body.get("dimensions", 1536))
        data = []
        for i, text in enumerate(inputs):
            vec = bag_of_words(text, dim)
            if body.get("encoding_format", "base64") == "base64":
                emb: Any = base64.b64encode(np.asarray(vec, "<f4").tobytes()).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )


Fake = tuple[FakeOpenAIEmbeddings, str]


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    server = FakeOpenAIEmbeddings()
    ts = TestServer(server.app, host="127.0.0.1")
    await ts.start_server()
    yield server, str(ts.make_url("/v1"))
    await ts.close()


async def test_embeds_in_order_normalised_and_skips_empty(fake: Fake) -> None:
    server, url = fake
    emb = OpenAIEmbedder(KEY, url, dim=64)
    out = await asyncio.to_thread(emb.embed, ["spaced repetition", "", "forgetting curve"])
    assert out.shape == (3, 64) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out[[0, 2]], axis=1), 1.0)
    assert not out[1].any()
    (req,) = server.requests
    assert req["model"] == "text-embedding-3-small" and req["dimensions"] == 64
    assert req["input"] == ["spaced repetition", "forgetting curve"]
    expected = np.asarray(bag_of_words("forgetting curve", 64), np.float32)
    assert np.allclose(out[2], expected / np.linalg.norm(expected))
    assert emb.name == "openai-text-embedding-3-small-64"


async def test_wrong_key_is_an_authentication_error(fake: Fake) -> None:
    _, url = fake
    emb = OpenAIEmbedder("sk-wrong", url, dim=64)
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(emb.embed, ["hello"])


async def test_hybrid_search_on_openai_vectors(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    store = HybridStore(
        SQLiteCaptureStore(str(tmp_path / "o.db")), OpenAIEmbedder(KEY, url, dim=64)
    )
    await store.start()
    try:
        now = time.time()
        await store.write_batch(
            [
                Capture("s", "Tell me about mitochondria", "They make ATP.", now, {}, "m1"),
                Capture("s", "How do volcanoes erupt", "Magma pressure.", now, {}, "v1"),
            ]
        )
        assert await store.index_pending() == 2
        hits = await store.search(SearchQuery("volcanoes magma"))
        assert hits[0].user_text == "How do volcanoes erupt"
        assert len(server.requests) >= 2  # the captures, then the query
    finally:
        await store.close()


async def test_openai_embedder_needs_a_key(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"OPENAI_API_KEY": ""}, embedder="openai", database_path=str(tmp_path / "x.db")
    )
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await open_storage(settings)
