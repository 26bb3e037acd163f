"""The Whisper stream's use of the model executor, with a stand-in for the model: its work
is its session's, interims are droppable, and what is too short is not queued at all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from pipelines.executor import ModelExecutor, work_owner
from pipelines.stt.whisper import WhisperSTT

SECOND = bytes(32000)  # 1 s at 16 kHz


class FakeModel:
    """Stands in for `WhisperModelHolder`: counts transcriptions, can hold them."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def get(self) -> None:
        return None

    def transcribe(self, pcm: bytes) -> str:
        assert self.gate.wait(10)
        self.calls.append(len(pcm))
        return f"{len(pcm) // 32000} s"

    #: What `transcribe_scored` says of its transcript (log probability per token).
    score = -0.2

    def transcribe_scored(self, pcm: bytes) -> tuple[str, float]:
        return self.transcribe(pcm), self.score


@pytest.fixture
async def pool() -> AsyncIterator[ModelExecutor]:
    executor = ModelExecutor(workers=1, max_queued=2)
    yield executor
    executor.shutdown()


async def test_the_streams_work_is_its_sessions(pool: ModelExecutor) -> None:
    stt = WhisperSTT(FakeModel(), pool)  # type: ignore[arg-type]
    work_owner.set("learner-1")
    stream = await stt.open(lambda text: None)
    assert stream.owner == "learner-1"
    await stream.aclose()


async def test_too_short_to_transcribe_is_not_queued(pool: ModelExecutor) -> None:
    model = FakeModel()
    stream = await WhisperSTT(model, pool).open(lambda text: None)  # type: ignore[arg-type]
    stream.push(bytes(3200))  # 0.1 s
    assert await stream.finalize() == ""
    stream.push(SECOND)
    assert await stream.finalize() == "1 s"
    assert model.calls == [32000]
    await stream.aclose()


async def test_interims_give_way_when_the_sessions_line_is_full(pool: ModelExecutor) -> None:
    model = FakeModel()
    heard: list[str] = []
    stream = await WhisperSTT(model, pool, interim_interval=0.05).open(heard.append)  # type: ignore[arg-type]
    stream.owner = "s"
    model.gate.clear()
    # The session's own earlier finals fill the one thread and its line of two.
    finals = [asyncio.create_task(pool.run(model.transcribe, SECOND, owner="s")) for _ in range(4)]
    stream.push(SECOND)
    await asyncio.sleep(0.3)  # the interim loop tried: skipped, not queued, not crashed
    assert pool.waiting == 3  # three finals wait (one runs); no interim among them
    model.gate.set()
    await asyncio.gather(*finals)
    async with asyncio.timeout(5):
        while not heard:  # noqa: ASYNC110 (the interim loop's callback)
            await asyncio.sleep(0.01)
    assert heard[0] == "1 s"
    await stream.aclose()


@pytest.mark.parametrize(("score", "reported_after"), [(-0.2, 0.0), (-1.2, 0.5)])
async def test_an_unsure_pause_transcript_is_reported_later(
    pool: ModelExecutor, score: float, reported_after: float
) -> None:
    """Whisper's transcript of a pause ends a turn early if it reads finished; one it was
    unsure of is reported only once the pause has lasted 0.5 s more. The final is the
    same transcript either way."""
    model = FakeModel()
    model.score = score
    heard: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    stream = await WhisperSTT(model, pool, interim_interval=60).open(  # type: ignore[arg-type]
        lambda text: heard.append((loop.time(), text))
    )
    stream.push(SECOND)
    asked = loop.time()
    stream.speculate()
    await asyncio.sleep(0.8)
    assert [text for _, text in heard] == ["1 s"]
    assert reported_after <= heard[0][0] - asked < reported_after + 0.2
    assert await stream.finalize() == "1 s"
    assert model.calls == [32000]  # the pause's transcript was the final one
    await stream.aclose()


async def test_an_unsure_pause_transcript_is_not_reported_once_the_caller_goes_on(
    pool: ModelExecutor,
) -> None:
    model = FakeModel()
    model.score = -1.2
    heard: list[str] = []
    stream = await WhisperSTT(model, pool, interim_interval=60).open(heard.append)  # type: ignore[arg-type]
    stream.push(SECOND)
    stream.speculate()
    await asyncio.sleep(0.2)
    stream.unspeculate()  # voice again
    await asyncio.sleep(0.5)
    assert heard == []
    await stream.aclose()
