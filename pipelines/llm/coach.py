"""The embedded learning coach: a deterministic, rule-based stand-in for a language model.

No instruction-following model ships offline on PyPI, so with no API key the agent is
this coach. It follows the learning-companion rules of `pipelines.prompts` by hand: it
reflects the key idea of what the user said, asks one follow-up question (rotating among
kinds of questions that deepen understanding), connects to an earlier topic when there
is one, and answers a goodbye with a short recap. Same input, same answer.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Sequence

from pipelines.ports import Exchange
from pipelines.provider_spec import ProviderSpec
from pipelines.recap import key_phrase, recap

PROVIDER = ProviderSpec(
    name="local", stage="llm", build=lambda v, ctx: LearningCoach(), in_process=True
)

_GOODBYE = re.compile(
    r"\b(good ?bye|bye|see you|that's all|that is all|i'm done|i am done|stop for today)\b",
    re.IGNORECASE,
)

_QUESTIONS = (
    "Why do you think that works the way it does?",
    "Can you think of an example from your own life?",
    "How would you explain it to a friend in one sentence?",
    "What would be a good way to test whether you really understand it?",
    "What surprised you most about it?",
    "Where could you use this in the next week?",
)


def coach_reply(user_text: str, history: Sequence[Exchange]) -> str:
    text = user_text.strip()
    if _GOODBYE.search(text):
        return recap(history)
    phrase = key_phrase(text)
    if not phrase:
        return "I'm listening. What's something you learned or are trying to understand?"
    reflect = f"So the key idea is {phrase}."
    earlier = next(
        (p for p in (key_phrase(ex.user) for ex in reversed(history)) if p and p != phrase),
        None,
    )
    if earlier and len(history) % 2 == 1:
        return f"{reflect} How does that connect to {earlier}, which you mentioned earlier?"
    question = _QUESTIONS[zlib.crc32(text.lower().encode()) % len(_QUESTIONS)]
    return f"{reflect} {question}"


class LearningCoach:
    """LanguageModel over `coach_reply`, streamed word by word like a real model."""

    name = "local"

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        reply = coach_reply(user_text, history)
        for i, word in enumerate(reply.split(" ")):
            yield word if i == 0 else " " + word
            await asyncio.sleep(0)

    def recap(self, history: Sequence[Exchange]) -> str:
        return recap(history)
