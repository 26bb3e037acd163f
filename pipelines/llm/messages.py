"""Conversation context as chat messages for the cloud language models."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.ports import Exchange, render_history


def chat_messages(history: Sequence[Exchange], user_text: str) -> list[dict[str, str]]:
    """History (user/assistant alternating, oldest first) plus the new user turn.

    Exchanges with an empty side (a reply interrupted before a word was heard) are left
    out: both Anthropic and OpenAI reject empty messages, and alternation must hold."""
    kept = [ex for ex in history if ex.user.strip() and ex.agent.strip()]
    return [*render_history(kept), {"role": "user", "content": user_text}]
