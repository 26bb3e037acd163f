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

PROVIDER = ProviderSpec(
    name="local", stage="llm", build=lambda v, ctx: LearningCoach(), in_process=True
)

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_GOODBYE = re.compile(
    r"\b(good ?bye|bye|see you|that's all|that is all|i'm done|i am done|stop for today)\b",
    re.IGNORECASE,
)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own really same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves i'm i've i'd i'll it's that's there's let's don't doesn't didn't can't won't
    today learned learning learn learnt studying study reading read think thinking thought
    know knew something thing things stuff like also well okay ok yeah yes um uh actually
    basically pretty much lot lots kind sort way really quite just get got getting make made
    want wanted going gonna need trying try tried use used using one two new good great
    interesting cool fact found find say said says tell told mean means improve improves
    help helps helped make makes cause causes increase increases reduce reduces work works
    show shows allow allows keep keeps give gives take takes become becomes seem seems
    explain explains describe describes called named remember""".split()
)

_QUESTIONS = (
    "Why do you think that works the way it does?",
    "Can you think of an example from your own life?",
    "How would you explain it to a friend in one sentence?",
    "What would be a good way to test whether you really understand it?",
    "What surprised you most about it?",
    "Where could you use this in the next week?",
)


def key_phrase(text: str, max_words: int = 3) -> str:
    """The most content-bearing run of words: the longest stretch without stopwords,
    ties broken by total word length, then by position."""
    words = _WORD.findall(text)
    best: list[str] = []
    run: list[str] = []
    for w in [*words, ""]:
        if w and w.lower() not in STOPWORDS and len(w) > 2:
            run.append(w)
            continue
        if run and (len(run), sum(map(len, run))) > (len(best), sum(map(len, best))):
            best = run
        run = []
    return " ".join(best[:max_words]).lower()


def recap(history: Sequence[Exchange]) -> str:
    topics: list[str] = []
    for ex in history:
        phrase = key_phrase(ex.user)
        if phrase and phrase not in topics:
            topics.append(phrase)
    if not topics:
        return "Thanks for talking with me. Goodbye!"
    listed = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + " and " + topics[-1]
    return f"Today you covered {listed}. Nice work, and goodbye!"


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
