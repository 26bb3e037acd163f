"""What the LLM and TTS chains add to the fallback engine, with in-process providers: who is
named for each call when one chain serves several sessions at once, the recap, the chain's
name, and the rule that text with nothing to say needs no audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from pipelines.chain import ChainPolicy, LLMChain, TTSChain
from pipelines.ports import Exchange
from pipelines.prompts import APOLOGY
from pipelines.providers import ProviderError
from tests.fakes.fixtures import RecordingObserver, collect

POLICY = ChainPolicy(first_byte_timeout=0.2, idle_timeout=0.2, retries=0)


class Picky:
    """Answers every question but the ones it was told to fail."""

    name = "picky"

    def __init__(self, *fails: str) -> None:
        self.fails = fails

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        await asyncio.sleep(0.01)
        if user_text in self.fails:
            raise ProviderError(self.name, "server", "HTTP 500")
        yield f"{self.name}: {user_text}"


class Coach(Picky):
    name = "coach"

    def recap(self, history: Sequence[Exchange]) -> str:
        return f"You covered {len(history)} topics."


class Silent:
    """A voice that produces no audio at all."""

    name = "silent"
    sample_rate = 16000

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for _ in ():
            yield b""


async def test_each_call_on_a_shared_chain_names_the_provider_that_served_it() -> None:
    obs = RecordingObserver()
    llm = LLMChain([Picky("b"), Coach()], POLICY, obs)
    replies = await asyncio.gather(collect(llm.stream("a", [])), collect(llm.stream("b", [])))
    assert replies == [["picky: a"], ["coach: b"]]
    assert sorted(p for _, p, _ in obs.latencies) == ["coach", "picky"]
    assert obs.fallbacks == [("llm", "picky", "coach")]


async def test_when_every_provider_fails_the_reply_is_one_apology() -> None:
    obs = RecordingObserver()
    llm = LLMChain([Picky("x"), Coach("x")], POLICY, obs)
    assert await collect(llm.stream("x", [])) == [APOLOGY]
    assert obs.latencies == []


def test_recap_comes_from_the_first_provider_that_writes_one() -> None:
    history = [Exchange("photosynthesis", "Why light?", 1.0)]
    assert LLMChain([Picky(), Coach()], POLICY).recap(history) == "You covered 1 topics."
    assert LLMChain([Picky()], POLICY).recap(history) == "Goodbye!"


def test_the_name_lists_the_providers_in_order() -> None:
    assert LLMChain([Picky(), Coach()], POLICY).name == "chain:picky,coach"


async def test_no_audio_is_a_fault_only_for_text_with_something_to_say() -> None:
    obs = RecordingObserver()
    tts = TTSChain([Silent()], POLICY, obs)
    assert await collect(tts.synthesize("...")) == []
    assert obs.errors == []
    assert await collect(tts.synthesize("Hello.")) == []
    assert obs.errors == [("tts", "silent", "empty")]
