"""pytest fixtures for the fake providers and an observer that records what it is told.
Test modules import the fixtures they use by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipelines.ports import TurnTrace
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.openai import FakeOpenAI


class RecordingObserver:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str, str]] = []
        self.fallbacks: list[tuple[str, str, str]] = []
        self.turns: list[dict[str, float]] = []
        self.latencies: list[tuple[str, str, float]] = []
        self.finished: list[TurnTrace] = []
        self.dropped_audio = 0.0

    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        self.turns.append(dict(stages))

    def provider_error(self, stage: str, provider: str, kind: str) -> None:
        self.errors.append((stage, provider, kind))

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None:
        self.fallbacks.append((stage, from_provider, to_provider))

    def work_time(self, stage: str, seconds: float) -> None:
        pass

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        self.latencies.append((stage, provider, seconds))

    def audio_dropped(self, seconds: float) -> None:
        self.dropped_audio += seconds

    def turn_finished(self, turn: TurnTrace) -> None:
        self.finished.append(turn)


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram() as fake:
        yield fake


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


async def collect(agen: Any) -> list[Any]:
    return [item async for item in agen]
