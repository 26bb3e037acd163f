"""Deepgram live transcription and OpenAI per-utterance transcription, alone and in the STT
chain, through fake servers. The fakes "hear" words encoded in the audio itself, so a
transcript is right only if every piece of audio reached the provider exactly once."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pipelines.chain import ChainPolicy, STTChain
from pipelines.stt.deepgram import DeepgramSTT
from pipelines.stt.openai import OpenAISTT
from tests.fakes import fixtures as fx
from tests.fakes import speechcodec
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.openai import FakeOpenAI

POLICY = ChainPolicy(finalize_timeout=0.5, open_timeout=1.0, retries=1, breaker_failures=3)
FRAME = 640  # 20 ms at 16 kHz
SENTENCE = "spaced repetition helps memory because retrieval strengthens recall"

fake_deepgram = fx.fake_deepgram
fake_openai = fx.fake_openai
observer = fx.observer


def deepgram(fake: FakeDeepgram, **kw: object) -> DeepgramSTT:
    opts: dict[str, object] = {"connect_timeout": 0.5, "finalize_timeout": 1.0}
    return DeepgramSTT(fake.api_key, base_url=fake.base_url, **{**opts, **kw})  # type: ignore[arg-type]


def openai_stt(fake: FakeOpenAI) -> OpenAISTT:
    return OpenAISTT(fake.api_key, base_url=fake.base_url + "/v1", connect_timeout=0.5)


async def speak(stream: object, text: str, pace: float = 0.0) -> None:
    audio = speechcodec.encode(text)
    for i in range(0, len(audio), FRAME):
        stream.push(audio[i : i + FRAME])  # type: ignore[attr-defined]
        await asyncio.sleep(pace)


async def test_deepgram_interims_and_fast_final(fake_deepgram) -> None:
    interims: list[str] = []
    stt = deepgram(fake_deepgram, finalize_timeout=3.0)
    stream = await stt.open(interims.append)
    await speak(stream, SENTENCE, pace=0.001)
    start = time.perf_counter()
    final = await stream.finalize()
    elapsed = time.perf_counter() - start
    assert final == SENTENCE
    # Finalize answered (in a few ms), not the 3 s wait for an answer that never came: the
    # bound leaves a busy machine room without the two being confused.
    assert elapsed < 1.0
    assert len(interims) >= 3 and interims[-1].startswith("spaced repetition")
    query = fake_deepgram.requests[0]["query"]
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    assert query["interim_results"] == "true" and query["model"] == "nova-3"
    # A second utterance on the same connection.
    await speak(stream, "plants store sugar")
    assert await stream.finalize() == "plants store sugar"
    assert fake_deepgram.connections == 1 and fake_deepgram.finalizes == 2
    await stream.aclose()
    assert fake_deepgram.close_streams == 1


async def test_deepgram_collects_endpointed_finals_until_the_finalize_answer(fake_deepgram) -> None:
    stream = await deepgram(fake_deepgram, endpointing_ms=100).open(lambda _: None)
    await speak(stream, "the brain forgets quickly", pace=0.001)
    stream.push(speechcodec.silence(200))  # Deepgram's endpointing finalizes this part
    await asyncio.sleep(0.05)
    await speak(stream, "without review")
    assert await stream.finalize() == "the brain forgets quickly without review"
    assert fake_deepgram.finals == ["the brain forgets quickly", "without review"]
    await stream.aclose()


async def test_deepgram_keeps_the_socket_alive_in_silence(fake_deepgram) -> None:
    fake_deepgram.idle_timeout = 0.3  # the service closes a silent socket (NET-0001)
    stream = await deepgram(fake_deepgram, keepalive_s=0.1).open(lambda _: None)
    await asyncio.sleep(0.8)
    assert fake_deepgram.keepalives >= 4
    await speak(stream, "plants store sugar")
    assert await stream.finalize() == "plants store sugar"
    assert fake_deepgram.connections == 1  # never closed for idleness
    await stream.aclose()


async def test_deepgram_drop_mid_utterance_reconnects_and_replays(fake_deepgram, caplog) -> None:
    caplog.set_level(logging.WARNING)
    faults: list[tuple[str, str]] = []
    stt = deepgram(fake_deepgram)
    stt.on_fault = lambda provider, kind: faults.append((provider, kind))
    fake_deepgram.fault("drop", after=len(speechcodec.encode("spaced repetition helps")))
    stream = await stt.open(lambda _: None)
    await speak(stream, "photosynthesis turns light")  # first utterance, before the fault
    assert await stream.finalize() == "photosynthesis turns light"
    await speak(stream, SENTENCE, pace=0.002)
    assert await stream.finalize() == SENTENCE  # every word, once
    assert fake_deepgram.connections == 2
    assert faults == [("deepgram", "dropped")]
    assert "deepgram stream lost (dropped); reconnecting and replaying" in caplog.text
    await stream.aclose()


async def test_deepgram_malformed_message_is_skipped(fake_deepgram, caplog) -> None:
    # The SDK skips (and logs) a message it cannot parse; the transcript is unaffected.
    fake_deepgram.fault("malformed", after=FRAME * 10)
    stream = await deepgram(fake_deepgram).open(lambda _: None)
    await speak(stream, SENTENCE, pace=0.002)
    assert await stream.finalize() == SENTENCE
    assert fake_deepgram.connections == 1
    assert "Skipping unknown WebSocket message" in caplog.text
    await stream.aclose()


async def test_deepgram_error_message_reconnects_and_replays(fake_deepgram) -> None:
    fake_deepgram.fault("error_event", after=FRAME * 10)
    stream = await deepgram(fake_deepgram).open(lambda _: None)
    await speak(stream, SENTENCE, pace=0.002)
    assert await stream.finalize() == SENTENCE
    assert fake_deepgram.connections == 2
    await stream.aclose()


async def test_discarded_false_start_does_not_leak_into_the_next_utterance(fake_deepgram) -> None:
    stream = await deepgram(fake_deepgram).open(lambda _: None)
    await speak(stream, "review the brain")
    stream.discard()
    await speak(stream, "plants store sugar")
    assert await stream.finalize() == "plants store sugar"
    await stream.aclose()


async def test_openai_transcribes_one_utterance_as_wav(fake_openai) -> None:
    stream = await openai_stt(fake_openai).open(lambda _: None)
    await speak(stream, SENTENCE)
    assert await stream.finalize() == SENTENCE
    req = fake_openai.requests[-1]
    assert req["path"] == "/v1/audio/transcriptions"
    assert req["body"]["model"] == "gpt-4o-mini-transcribe"
    assert await stream.finalize() == ""  # nothing said: no request
    assert fake_openai.count("/v1/audio/transcriptions") == 1


async def test_hung_finalize_falls_back_with_the_utterance_replayed(
    fake_deepgram, fake_openai, observer
) -> None:
    fake_deepgram.always = None
    fake_deepgram.fault("hang_finalize")
    chain = STTChain([deepgram(fake_deepgram), openai_stt(fake_openai)], POLICY, observer)
    stream = await chain.open(lambda _: None)
    await speak(stream, SENTENCE, pace=0.001)
    start = time.perf_counter()
    assert await stream.finalize() == SENTENCE
    assert time.perf_counter() - start < 1.2
    assert observer.errors == [("stt", "deepgram", "timeout")]
    assert observer.fallbacks == [("stt", "deepgram", "openai")]
    assert stream.provider == "openai"
    assert [(st, p) for st, p, _ in observer.latencies] == [("stt", "openai")]
    # The next utterance goes back to Deepgram (its breaker is still closed).
    await speak(stream, "plants store sugar", pace=0.001)
    assert await stream.finalize() == "plants store sugar"
    assert stream.provider == "deepgram"
    assert fake_deepgram.connections == 2
    await stream.aclose()


async def test_bad_key_at_connect_opens_the_fallback(fake_deepgram, fake_openai, observer) -> None:
    bad = DeepgramSTT("dg-wrong-key", base_url=fake_deepgram.base_url, connect_timeout=0.5)
    chain = STTChain([bad, openai_stt(fake_openai)], POLICY, observer)
    stream = await chain.open(lambda _: None)
    await speak(stream, SENTENCE)
    assert await stream.finalize() == SENTENCE
    assert observer.errors == [("stt", "deepgram", "auth")]
    assert chain.status()[0]["state"] == "open"
    await speak(stream, "plants store sugar")
    assert await stream.finalize() == "plants store sugar"
    assert fake_deepgram.count("/v1/listen") == 1  # permanent: never tried again
    await stream.aclose()


async def test_rate_limited_and_hanging_handshakes(fake_deepgram, fake_openai, observer) -> None:
    fake_deepgram.fault("status", status=429, retry_after=5)
    chain = STTChain([deepgram(fake_deepgram), openai_stt(fake_openai)], POLICY, observer)
    stream = await chain.open(lambda _: None)
    assert chain.status()[0]["state"] == "open"  # for the retry-after of the handshake
    assert 4 <= chain.status()[0]["retry_in_s"] <= 5
    await stream.aclose()
    fake_deepgram.fault("hang")
    chain2 = STTChain([deepgram(fake_deepgram), openai_stt(fake_openai)], POLICY, observer)
    start = time.perf_counter()
    stream2 = await chain2.open(lambda _: None)
    assert time.perf_counter() - start < 1.2
    await speak(stream2, "plants store sugar")
    assert await stream2.finalize() == "plants store sugar"
    assert observer.errors == [("stt", "deepgram", "rate_limited"), ("stt", "deepgram", "timeout")]
    await stream2.aclose()


async def test_provider_that_keeps_dropping_gives_up_and_falls_back(
    fake_deepgram, fake_openai, observer
) -> None:
    from tests.fakes.base import Fault

    fake_deepgram.always = Fault("drop", after=FRAME * 5)
    chain = STTChain([deepgram(fake_deepgram), openai_stt(fake_openai)], POLICY, observer)
    stream = await chain.open(lambda _: None)
    await speak(stream, SENTENCE, pace=0.003)
    assert await stream.finalize() == SENTENCE
    kinds = [e for e in observer.errors if e[1] == "deepgram"]
    assert kinds[-1] == ("stt", "deepgram", "dropped") and len(kinds) >= 2
    assert observer.fallbacks[-1] == ("stt", "deepgram", "openai")
    await stream.aclose()


async def test_every_provider_failing_raises_a_clear_error(
    fake_deepgram, fake_openai, observer
) -> None:
    from pipelines.providers import ProviderError
    from tests.fakes.base import Fault

    fake_deepgram.always = Fault("hang_finalize")
    fake_openai.always = Fault("status", status=500)
    chain = STTChain([deepgram(fake_deepgram), openai_stt(fake_openai)], POLICY, observer)
    stream = await chain.open(lambda _: None)
    await speak(stream, SENTENCE)
    with pytest.raises(ProviderError) as info:
        await stream.finalize()
    assert info.value.kind == "unavailable"
    await stream.aclose()


async def test_deepgram_key_never_logged_even_at_debug(fake_deepgram, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    stream = await deepgram(fake_deepgram).open(lambda _: None)
    await speak(stream, "plants store sugar")
    assert await stream.finalize() == "plants store sugar"
    await stream.aclose()
    bad = DeepgramSTT("dg-secret-never-log-me", base_url=fake_deepgram.base_url)
    with pytest.raises(Exception) as info:
        await bad.open(lambda _: None)
    assert "dg-secret-never-log-me" not in str(info.value)
    assert "Authorization" in caplog.text  # the websockets client did log its headers...
    assert fake_deepgram.api_key not in caplog.text  # ...but never the key
    assert "dg-secret-never-log-me" not in caplog.text
