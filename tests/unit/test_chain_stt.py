"""The STT chain's own bookkeeping, with in-process recognisers that "transcribe" the bytes
they were given: which provider hears which audio, whose interims reach the session, when
the chain goes back to the preferred provider. (The real adapters are tested against the
fake servers in tests/integration/test_providers_stt.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pipelines.chain import ChainPolicy, STTChain
from pipelines.providers import ProviderError
from tests.fakes.fixtures import RecordingObserver

POLICY = ChainPolicy(finalize_timeout=0.2, open_timeout=0.2, breaker_failures=2)


class EchoSTT:
    """Transcribes bytes as text; can fail to open, or fail / hang on finalize."""

    def __init__(self, name: str, *, pauses: bool = True) -> None:
        self.name = name
        #: Its streams transcribe a pause when asked (`speculate`), as Whisper's do; else
        #: they only stream interims, as Deepgram's do.
        self.pauses = pauses
        self.fail_open = False
        self.fail_finalize = False
        self.hang_finalize = False
        self.streams: list[EchoStream] = []

    async def open(self, on_interim: Callable[[str], None]) -> EchoStream:
        if self.fail_open:
            raise ProviderError(self.name, "connect", "refused")
        stream = (EchoStream if self.pauses else StreamingEcho)(self, on_interim)
        self.streams.append(stream)
        return stream


class StreamingEcho:
    def __init__(self, owner: EchoSTT, on_interim: Callable[[str], None]) -> None:
        self.owner = owner
        self.on_interim = on_interim
        self.buf = b""
        self.closed = False
        self.speculated = 0

    def push(self, frame: bytes) -> None:
        self.buf += frame
        self.on_interim(f"{self.owner.name}:{self.buf.decode()}")

    async def finalize(self) -> str:
        text, self.buf = self.buf.decode(), b""
        if self.owner.hang_finalize:
            await asyncio.sleep(10)
        if self.owner.fail_finalize:
            raise ProviderError(self.owner.name, "server", "boom")
        return text

    def discard(self) -> None:
        self.buf = b""

    async def aclose(self) -> None:
        self.closed = True


class EchoStream(StreamingEcho):
    def speculate(self) -> None:
        self.speculated += 1


@pytest.fixture
def pair() -> tuple[EchoSTT, EchoSTT]:
    return EchoSTT("primary"), EchoSTT("backup")


async def test_fallback_replays_the_utterance_and_ignores_the_failed_providers_interims(
    pair: tuple[EchoSTT, EchoSTT],
) -> None:
    primary, backup = pair
    obs = RecordingObserver()
    chain = STTChain([primary, backup], POLICY, obs)
    interims: list[str] = []
    stream = await chain.open(interims.append)
    stream.push(b"spaced ")
    stream.push(b"repetition")
    primary.hang_finalize = True
    assert await stream.finalize() == "spaced repetition"
    # The backup heard the replayed utterance (and said so); then the stale primary
    # speaks up, and is not heard.
    assert interims == ["primary:spaced ", "primary:spaced repetition", "backup:spaced repetition"]
    old = primary.streams[0]
    old.on_interim("primary:late words")
    assert interims[-1] == "backup:spaced repetition"
    assert obs.errors == [("stt", "primary", "timeout")]
    assert obs.fallbacks == [("stt", "primary", "backup")]
    await asyncio.sleep(0)
    assert old.closed


async def test_next_utterance_audio_during_a_fallback_is_not_mixed_in(
    pair: tuple[EchoSTT, EchoSTT],
) -> None:
    primary, backup = pair
    chain = STTChain([primary, backup], POLICY)
    stream = await chain.open(lambda _: None)
    stream.push(b"first")
    primary.hang_finalize = True
    task = asyncio.create_task(stream.finalize())
    await asyncio.sleep(0.05)  # the primary is hanging; the user speaks again
    stream.push(b"second")
    assert await task == "first"
    primary.hang_finalize = False
    # The next utterance reached a provider whole, exactly once.
    assert await stream.finalize() == "second"


async def test_goes_back_to_the_preferred_provider_unless_its_breaker_is_open(
    pair: tuple[EchoSTT, EchoSTT],
) -> None:
    primary, backup = pair
    chain = STTChain([primary, backup], POLICY)
    stream = await chain.open(lambda _: None)
    primary.fail_finalize = True
    stream.push(b"one")
    assert await stream.finalize() == "one" and stream.provider == "backup"
    primary.fail_finalize = False
    stream.push(b"two")
    assert await stream.finalize() == "two" and stream.provider == "primary"
    # Two failures in a row open the primary's breaker: the backup keeps the stream.
    primary.fail_finalize = True
    for word in (b"three", b"four"):
        stream.push(word)
        assert await stream.finalize() == word.decode()
    assert chain.status()[0]["state"] == "open"
    opened = len(primary.streams)
    stream.push(b"five")
    assert await stream.finalize() == "five" and stream.provider == "backup"
    assert len(primary.streams) == opened


async def test_open_never_fails_and_finalize_says_when_nobody_answers(
    pair: tuple[EchoSTT, EchoSTT],
) -> None:
    primary, backup = pair
    primary.fail_open = backup.fail_open = True
    chain = STTChain([primary, backup], ChainPolicy(open_timeout=0.2, breaker_failures=10))
    stream = await chain.open(lambda _: None)  # the session still starts
    stream.push(b"hello")
    with pytest.raises(ProviderError) as info:
        await stream.finalize()
    assert info.value.kind == "unavailable"
    backup.fail_open = False
    stream.push(b"again")
    assert await stream.finalize() == "again"


async def test_nothing_said_costs_nothing_and_speculation_is_forwarded(
    pair: tuple[EchoSTT, EchoSTT],
) -> None:
    primary, backup = pair
    chain = STTChain([primary, backup], POLICY)
    stream = await chain.open(lambda _: None)
    stream.push(b"x")
    stream.discard()
    stream.speculate()
    assert primary.streams[0].speculated == 1
    assert await stream.finalize() == ""
    await stream.aclose()
    assert primary.streams[0].closed


async def test_says_whether_the_recogniser_in_use_transcribes_pauses() -> None:
    # Deepgram-like in front, Whisper-like behind.
    streaming, whisper = EchoSTT("streaming", pauses=False), EchoSTT("whisper")
    chain = STTChain([streaming, whisper], POLICY)
    stream = await chain.open(lambda _: None)
    assert stream.transcribes_pauses is False
    streaming.fail_finalize = True
    stream.push(b"one")
    assert await stream.finalize() == "one" and stream.provider == "whisper"
    # Back to the preferred one between utterances: none is open, so it cannot be told.
    assert stream.transcribes_pauses is None
    stream.push(b"two")
    assert await stream.finalize() == "two"
    # Two failures open the front one's breaker: the fallback stays, and is in use.
    assert chain.status()[0]["state"] == "open"
    stream.push(b"three")
    assert await stream.finalize() == "three" and stream.provider == "whisper"
    assert stream.transcribes_pauses is True
    await stream.aclose()
