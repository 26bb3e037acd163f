"""The simulated providers keep the clock the load test's floor is computed from:
STT final 150 ms after end of speech, LLM first token 300 ms later then 19 more 10 ms
apart, TTS first audio 100 ms after a piece, 1.5 s of audio per reply in 20 ms frames."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipelines.chunker import SentenceChunker
from pipelines.llm.simulated import REPLY_TOKENS, SimulatedLLM
from pipelines.registry import ProviderSettings, build_providers
from pipelines.stt.simulated import SimulatedSTT
from pipelines.tts.simulated import SimulatedTTS


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the simulated providers ask for, not the wall clock (which a busy test
    machine stretches): `asyncio.sleep` records its argument and only yields."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


async def test_stt_final_after_150_ms_and_push_keeps_no_audio(waits: list[float]) -> None:
    stream = await SimulatedSTT().open(lambda text: None)
    for _ in range(50):
        stream.push(bytes(640))
    assert not hasattr(stream, "__dict__")  # slots only: nothing grows per frame
    text = await stream.finalize()
    assert waits == [0.15]
    assert text == "I said something for 1000 milliseconds."
    stream.push(bytes(640))
    stream.discard()
    assert await asyncio.wait_for(stream.finalize(), 1) == "I said something for 0 milliseconds."


async def test_the_simulated_waits_are_real_time() -> None:
    t0 = time.monotonic()
    stream = await SimulatedSTT().open(lambda text: None)
    await stream.finalize()
    async for _ in SimulatedLLM().stream("hello", []):
        break
    async for _ in SimulatedTTS().synthesize("Hello there."):
        break
    assert time.monotonic() - t0 >= 0.15 + 0.3 + 0.1


async def test_llm_first_token_after_300_ms_then_every_10_ms(waits: list[float]) -> None:
    tokens = [token async for token in SimulatedLLM().stream("hello", [])]
    assert tokens == list(REPLY_TOKENS) and len(tokens) == 20
    assert waits == [0.3] + [0.01] * 19
    # The first token is a whole sentence: TTS can start on it at once.
    chunker = SentenceChunker()
    assert chunker.push(tokens[0]) == [tokens[0].strip()]


async def test_tts_first_audio_after_100_ms_and_a_reply_is_1_5_s(waits: list[float]) -> None:
    tts = SimulatedTTS()
    chunker = SentenceChunker()
    pieces = [p for t in REPLY_TOKENS for p in chunker.push(t)] + chunker.flush()
    total = 0
    for piece in pieces:
        asked = len(waits)
        async for frame in tts.synthesize(piece):
            assert waits[asked:] == [0.1]  # before the first frame, and only then
            assert len(frame) == 640  # 20 ms at 16 kHz PCM16
            total += len(frame)
    assert len(pieces) == 2 and waits == [0.1, 0.1]
    assert total == 75 * 640  # 1.5 s


def test_registry_builds_simulated_alone_and_refuses_it_in_a_chain() -> None:
    from pipelines.executor import ModelExecutor

    executor = ModelExecutor(1)
    try:
        cfg = ProviderSettings(
            stt_chain=("simulated",), llm_chain=("simulated",), tts_chain=("simulated",)
        )
        p = build_providers(cfg, executor)
        assert (p.stt.name, p.llm.name, p.tts.name) == ("simulated",) * 3
        with pytest.raises(ValueError, match="simulated cannot be chained"):
            build_providers(ProviderSettings(llm_chain=("simulated", "local")), executor)
    finally:
        executor.shutdown()
