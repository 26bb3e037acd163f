"""Provider Protocols: speech-to-text, language model, text-to-speech.

One file per provider under `pipelines/stt`, `pipelines/llm`, `pipelines/tts`. Every
method that touches the network or a model must be cancellable: a barge-in cancels the
task awaiting it, and the provider must stop its work and release what it holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from pipelines.ports import Exchange

#: Sample rate of the audio every STT stream receives (the session resamples to it).
STT_SAMPLE_RATE = 16000


class ProviderError(Exception):
    """A provider failed. `permanent` faults (bad key, bad request) are never retried."""

    def __init__(self, provider: str, kind: str, message: str, *, permanent: bool = False):
        super().__init__(f"{provider}: {kind}: {message}")
        self.provider = provider
        self.kind = kind
        self.permanent = permanent


class STTStream(Protocol):
    """Transcription of one conversation, utterance by utterance.

    `push` is called on the audio hot path for every speech frame (PCM16 mono, 16 kHz,
    typically 20 ms) and must not block or allocate much. Interim hypotheses are reported
    through the `on_interim` callback given to `SpeechToText.open`, from the event loop.
    """

    def push(self, frame: bytes) -> None: ...

    async def finalize(self) -> str:
        """End of the current utterance: return its final transcript and start a new one."""
        ...

    def discard(self) -> None:
        """Drop the current utterance (a false start) without transcribing it."""
        ...

    async def aclose(self) -> None:
        """Cancel background work and release connections. Idempotent."""
        ...


class SpeechToText(Protocol):
    name: str

    async def open(self, on_interim: Callable[[str], None]) -> STTStream: ...


class LanguageModel(Protocol):
    name: str

    def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        """Yield the reply as text deltas, as soon as they are produced."""
        ...

    def recap(self, history: Sequence[Exchange]) -> str:
        """One-sentence summary of the conversation, said at hang-up.

        Deterministic and offline (no network call: the caller is leaving); adapters use
        `pipelines.recap.recap` unless they have a better local summary.
        """
        ...


class TextToSpeech(Protocol):
    name: str
    #: Native rate of the PCM16 the provider yields; the session resamples as needed.
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yield PCM16 mono chunks at `sample_rate` for one sentence, first chunk ASAP."""
        ...
