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
