"""In-test providers and stores for driving a Session without models or services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from pipelines.ports import Capture, Exchange
from pipelines.recap import recap


class ScriptedSTT:
    """Returns the next scripted transcript per utterance; counts the audio it was given."""

    name = "fake-stt"

    def __init__(self, finals: Sequence[str], interim_every: int = 10, delay: float = 0.0):
        self.finals = list(finals)
        self.interim_every = interim_every
        self.delay = delay
        self.pushed_frames: list[int] = []
        self.streams: list[ScriptedStream] = []

    async def open(self, on_interim: Callable[[str], None]) -> ScriptedStream:
        stream = ScriptedStream(self, on_interim)
        self.streams.append(stream)
        return stream


class ScriptedStream:
    def __init__(self, owner: ScriptedSTT, on_interim: Callable[[str], None]) -> None:
        self.owner = owner
        self.on_interim = on_interim
        self.frames = 0
        self.closed = False

    def push(self, frame: bytes) -> None:
        self.frames += 1
        if self.frames % self.owner.interim_every == 0:
            self.on_interim(f"partial {self.frames}")

    async def finalize(self) -> str:
        self.owner.pushed_frames.append(self.frames)
        self.frames = 0
        if self.owner.delay:
            await asyncio.sleep(self.owner.delay)
        return self.owner.finals.pop(0) if self.owner.finals else ""

    def discard(self) -> None:
        self.frames = 0

    async def aclose(self) -> None:
        self.closed = True


class ScriptedLLM:
    name = "fake-llm"

    def __init__(self, reply: str = "First sentence here. Second sentence follows.", gap=0.0):
        self.reply = reply
        self.gap = gap
        self.calls: list[tuple[str, list[Exchange]]] = []
        self.cancelled = 0
        self.recapped: list[list[Exchange]] = []

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        self.calls.append((user_text, list(history)))
        try:
            for i, word in enumerate(self.reply.split(" ")):
                await asyncio.sleep(self.gap)
                yield word if i == 0 else " " + word
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def recap(self, history: Sequence[Exchange]) -> str:
        self.recapped.append(list(history))
        return recap(history)


class ToneTTS:
    """One second of audio per sentence at 16 kHz, in 4 chunks."""

    name = "fake-tts"
    sample_rate = 16000

    def __init__(self, seconds_per_piece: float = 1.0) -> None:
        self.seconds = seconds_per_piece
        self.pieces: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.pieces.append(text)
        n = int(self.sample_rate * self.seconds) // 4
        for _ in range(4):
            await asyncio.sleep(0)
            yield b"\x10\x00" * n


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, list[Exchange]] = {}
        self.touches = 0

    async def get_context(self, session_id: str) -> list[Exchange]:
        return list(self.data.get(session_id, []))

    async def append_exchange(self, session_id: str, exchange: Exchange) -> None:
        self.data.setdefault(session_id, []).append(exchange)

    async def touch(self, session_id: str) -> None:
        self.touches += 1


class ListSink:
    def __init__(self) -> None:
        self.captures: list[Capture] = []

    def submit(self, capture: Capture) -> None:
        self.captures.append(capture)
