"""One Session observer made of several: the admin hub's metrics and, when tracing is on,
the turn tracer (server/tracing.py). Each report goes to each observer, in order."""

from __future__ import annotations

from pipelines.ports import SessionObserver, TurnTrace


class FanOut:
    def __init__(self, *observers: SessionObserver) -> None:
        self._observers = observers

    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        for observer in self._observers:
            observer.turn_completed(stages, mode)

    def provider_error(self, stage: str, provider: str, kind: str) -> None:
        for observer in self._observers:
            observer.provider_error(stage, provider, kind)

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None:
        for observer in self._observers:
            observer.provider_fallback(stage, from_provider, to_provider)

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        for observer in self._observers:
            observer.provider_latency(stage, provider, seconds)

    def work_time(self, stage: str, seconds: float) -> None:
        for observer in self._observers:
            observer.work_time(stage, seconds)

    def audio_dropped(self, seconds: float) -> None:
        for observer in self._observers:
            observer.audio_dropped(seconds)

    def turn_finished(self, turn: TurnTrace) -> None:
        for observer in self._observers:
            observer.turn_finished(turn)
