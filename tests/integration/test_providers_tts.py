"""Deepgram Aura and OpenAI speech adapters and the TTS chain, through fake servers that
stream raw PCM in odd-sized chunks (so sample alignment is tested on every call)."""

from __future__ import annotations

import time

from pipelines.chain import ChainPolicy, TTSChain
from pipelines.tts.deepgram import DeepgramTTS
from pipelines.tts.openai import OpenAITTS
from tests.fakes import fixtures as fx
from tests.fakes import speechcodec
from tests.fakes.base import Fault
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.fixtures import collect
from tests.fakes.openai import CHUNK_BYTES, MS_PER_CHAR, FakeOpenAI

POLICY = ChainPolicy(first_byte_timeout=0.4, idle_timeout=1.0, retries=1)
TEXT = "Spaced repetition spreads reviews out over time."

fake_deepgram = fx.fake_deepgram
fake_openai = fx.fake_openai
observer = fx.observer


def expected(text: str, rate: int) -> bytes:
    return speechcodec.tone(len(text) * MS_PER_CHAR, rate)


def aura(fake: FakeDeepgram, rate: int = 24000) -> DeepgramTTS:
    return DeepgramTTS(fake.api_key, base_url=fake.base_url, sample_rate=rate, connect_timeout=0.5)


def openai_tts(fake: FakeOpenAI) -> OpenAITTS:
    return OpenAITTS(fake.api_key, base_url=fake.base_url + "/v1", connect_timeout=0.5)


async def test_deepgram_aura_streams_whole_samples(fake_deepgram) -> None:
    fake_deepgram.chunk_delay = 0.01
    tts = aura(fake_deepgram)
    chunks = await collect(tts.synthesize(TEXT))
    assert len(chunks) > 3 and all(len(c) % 2 == 0 for c in chunks)
    assert b"".join(chunks) == expected(TEXT, 24000)[: len(b"".join(chunks))]
    assert len(b"".join(chunks)) == len(expected(TEXT, 24000))
    req = fake_deepgram.requests[-1]
    assert req["query"]["model"] == "aura-2-thalia-en"
    assert req["query"]["encoding"] == "linear16" and req["query"]["sample_rate"] == "24000"
    assert req["body"] == {"text": TEXT}
    await tts.aclose()


async def test_openai_speech_streams_pcm(fake_openai) -> None:
    tts = openai_tts(fake_openai)
    assert tts.sample_rate == 24000
    audio = b"".join(await collect(tts.synthesize(TEXT)))
    assert audio == expected(TEXT, 24000)
    body = fake_openai.requests[-1]["body"]
    assert body["response_format"] == "pcm" and body["voice"] == "alloy"
    await tts.aclose()


async def test_first_chunk_arrives_before_the_sentence_is_done(fake_deepgram) -> None:
    fake_deepgram.chunk_delay = 0.05
    tts = aura(fake_deepgram)
    start = time.perf_counter()
    agen = tts.synthesize(TEXT)
    await anext(agen)
    first = time.perf_counter() - start
    rest = await collect(agen)
    total = time.perf_counter() - start
    assert first < 0.15 and total > 0.05 * len(rest)
    await tts.aclose()


async def test_fallback_on_server_error_and_on_hang(fake_deepgram, fake_openai, observer) -> None:
    chain = TTSChain([aura(fake_deepgram), openai_tts(fake_openai)], POLICY, observer)
    fake_deepgram.fault("status", status=500)
    fake_deepgram.fault("status", status=500)
    assert b"".join(await collect(chain.synthesize(TEXT))) == expected(TEXT, 24000)
    assert fake_deepgram.count("/v1/speak") == 2 and fake_openai.count("/v1/audio/speech") == 1
    fake_deepgram.fault("hang")
    start = time.perf_counter()
    assert b"".join(await collect(chain.synthesize(TEXT))) == expected(TEXT, 24000)
    assert time.perf_counter() - start < 1.0
    assert observer.errors == [("tts", "deepgram", "server")] * 2 + [("tts", "deepgram", "timeout")]
    assert observer.fallbacks == [("tts", "deepgram", "openai")] * 2


async def test_drop_after_audio_ends_the_sentence_without_repeating(
    fake_deepgram, fake_openai, observer
) -> None:
    chain = TTSChain([aura(fake_deepgram), openai_tts(fake_openai)], POLICY, observer)
    fake_deepgram.fault("drop", after=2)
    audio = b"".join(await collect(chain.synthesize(TEXT)))
    assert 0 < len(audio) <= 2 * CHUNK_BYTES + 1
    assert audio == expected(TEXT, 24000)[: len(audio)]  # what was said, said once
    assert fake_openai.count("/v1/audio/speech") == 0
    assert observer.errors == [("tts", "deepgram", "dropped")]


async def test_bad_key_and_rate_limit_open_the_breaker(
    fake_deepgram, fake_openai, observer
) -> None:
    chain = TTSChain([openai_tts(fake_openai), aura(fake_deepgram)], POLICY, observer)
    fake_openai.fault("status", status=429, retry_after=7)
    assert b"".join(await collect(chain.synthesize(TEXT))) == expected(TEXT, 24000)
    status = chain.status()[0]
    assert status["state"] == "open" and 6 <= status["retry_in_s"] <= 7
    await collect(chain.synthesize(TEXT))
    assert fake_openai.count("/v1/audio/speech") == 1
    bad = TTSChain(
        [DeepgramTTS("dg-wrong", base_url=fake_deepgram.base_url), openai_tts(fake_openai)],
        POLICY,
        observer,
    )
    await collect(bad.synthesize(TEXT))
    await collect(bad.synthesize(TEXT))
    assert observer.errors == [("tts", "openai", "rate_limited"), ("tts", "deepgram", "auth")]


async def test_fallback_audio_is_resampled_to_the_chain_rate(
    fake_deepgram, fake_openai, observer
) -> None:
    chain = TTSChain([aura(fake_deepgram, rate=16000), openai_tts(fake_openai)], POLICY, observer)
    assert chain.sample_rate == 16000
    normal = b"".join(await collect(chain.synthesize(TEXT)))
    assert normal == expected(TEXT, 16000)
    fake_deepgram.fault("status", status=401)
    fallback = b"".join(await collect(chain.synthesize(TEXT)))
    # OpenAI's 24 kHz audio, converted: the same duration at 16 kHz.
    assert abs(len(fallback) - len(normal)) <= 64


async def test_all_failing_yields_no_audio_and_reports(
    fake_deepgram, fake_openai, observer
) -> None:
    fake_deepgram.always = Fault("status", status=503)
    fake_openai.always = Fault("status", status=500)
    chain = TTSChain([aura(fake_deepgram), openai_tts(fake_openai)], POLICY, observer)
    assert await collect(chain.synthesize(TEXT)) == []
    assert [e[1] for e in observer.errors] == ["deepgram"] * 2 + ["openai"] * 2
