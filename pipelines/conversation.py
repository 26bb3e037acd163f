"""A typed turn outside a voice session (HTTP `POST /api/conversation`), sharing the
session context and capture path with voice turns."""

from __future__ import annotations

import time
from typing import Any

from pipelines.ports import Capture, CaptureSink, Exchange, SessionStore
from pipelines.providers import LanguageModel


async def record_exchange(
    store: SessionStore,
    captures: CaptureSink,
    session_id: str,
    user_text: str,
    agent_text: str,
    metadata: dict[str, Any],
    learner_id: str,
) -> float:
    """Remember the exchange in the session context and queue its capture."""
    now = time.time()
    await store.append_exchange(session_id, Exchange(user_text, agent_text, now))
    captures.submit(
        Capture(session_id, user_text, agent_text, now, metadata, learner_id=learner_id)
    )
    return now


async def text_turn(
    llm: LanguageModel,
    store: SessionStore,
    captures: CaptureSink,
    session_id: str,
    user_text: str,
    learner_id: str,
) -> tuple[str, float]:
    history = await store.get_context(session_id)
    parts = [delta async for delta in llm.stream(user_text, history)]
    agent_text = "".join(parts).strip()
    meta = {"mode": "text"}
    ts = await record_exchange(store, captures, session_id, user_text, agent_text, meta, learner_id)
    return agent_text, ts
