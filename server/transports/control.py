"""Protocol v1 control messages that mean the same on every transport carrying them
(the browser WebSocket, the WebRTC data channel): a typed turn and the goodbye."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipelines.session import Session, SessionInputError
from server.limits.policy import Limited, Limits
from server.validation import MAX_TEXT_CHARS


async def typed_turn(
    session: Session, message: dict[str, Any], limits: Limits | None, learner_id: str
) -> None:
    """A `text` message: validated, charged to the learner's turn budget, submitted."""
    text = message.get("text")
    if not isinstance(text, str):
        raise SessionInputError("invalid_message", "text must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise SessionInputError("text_too_long", f"text is limited to {MAX_TEXT_CHARS} chars")
    if limits is not None:  # a typed turn is a language-model call
        try:
            await limits.conversation_turn(learner_id)
        except Limited as exc:
            raise SessionInputError("rate_limited", str(exc)) from None
    session.submit_text(text)


async def goodbye(session: Session) -> dict[str, str]:
    """An `end` message: the recap, once what the session queued has gone out (2 s at most)."""
    summary = await session.end()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await session.outbox.wait_empty()
    return {"type": "summary", "text": summary}
