"""Voice activity detection and endpointing: when did the user start and stop talking.

Two layers, both sans-I/O (time is passed in, never read from a clock):

* ``TurnDetector`` is pure hysteresis over per-frame voiced/unvoiced booleans, so its timing
  can be tested to the frame without audio.
* ``Endpointer`` classifies each frame with webrtcvad, feeds the detector and keeps a short
  ring of recent frames so that, on START, the audio *before* the detection point (the first
  syllable, which the start window needed to confirm) still reaches the recogniser.

All durations are counted in frames of audio, not wall-clock time: the audio itself is the
clock that matters for "how long was that pause", and it makes behaviour deterministic.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import webrtcvad

from audio.pcm import frame_bytes

VAD_SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
VAD_FRAME_MS: tuple[int, ...] = (10, 20, 30)


class VadEvent(enum.IntEnum):
    """What one frame meant for the turn: still quiet, speech began, continues, or ended."""

    SILENCE = 0
    START = 1
    SPEECH = 2
    END = 3


class EndReason(enum.Enum):
    """Why the last utterance ended (the engine may treat a forced cut differently)."""

    SILENCE = "silence"
    MAX_UTTERANCE = "max_utterance"
    FORCED = "forced"


@dataclass
class EndpointerConfig:
    """Endpointing parameters, in milliseconds of audio.

    ``start_ms`` of voiced frames within the sliding ``start_window_ms`` start an utterance
    (so a cough or a click shorter than ``start_ms`` never does); ``end_silence_ms`` of
    unvoiced audio after the last voiced frame ends it; ``preroll_ms`` of audio before the
    start window is kept so the recogniser hears the onset; ``max_utterance_ms`` caps a turn.
    """

    sample_rate: int = 16000
    frame_ms: int = 20
    aggressiveness: int = 2
    start_ms: int = 120
    start_window_ms: int = 300
    end_silence_ms: int = 500
    preroll_ms: int = 300
    max_utterance_ms: int = 30000

    def __post_init__(self) -> None:
        if self.frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"frame_ms must be one of {VAD_FRAME_MS}, got {self.frame_ms!r}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {self.aggressiveness!r}")
        for name in ("start_ms", "start_window_ms", "end_silence_ms", "max_utterance_ms"):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be at least frame_ms ({self.frame_ms})")
        if self.preroll_ms < 0:
            raise ValueError("preroll_ms must not be negative")
        if self.start_ms > self.start_window_ms:
            raise ValueError("start_ms must not exceed start_window_ms")


class TurnDetector:
    """Hysteresis state machine from per-frame voiced booleans to turn events.

    START is returned on the frame at which at least ``start_ms`` of voiced frames lie within
    the last ``start_window_ms`` (that frame included). In speech, each frame returns SPEECH
    except the one at which the unvoiced time since the last voiced frame reaches
    ``end_silence_ms`` (or the utterance, counted from the START frame, reaches
    ``max_utterance_ms``): that frame returns END and the machine is back in silence with an
    empty start window, so a new utterance needs a fresh ``start_ms`` of voice.
    """

    __slots__ = (
        "_end_silence_ms",
        "_frame_ms",
        "_in_speech",
        "_max_frames",
        "_silent_frames",
        "_speech_frames",
        "_start_frames",
        "_started_at",
        "_voiced_in_window",
        "_window",
        "last_end_reason",
    )

    def __init__(self, config: EndpointerConfig | None = None) -> None:
        cfg = config or EndpointerConfig()
        self._frame_ms = cfg.frame_ms
        self._start_frames = math.ceil(cfg.start_ms / cfg.frame_ms)
        window_frames = max(cfg.start_window_ms // cfg.frame_ms, self._start_frames)
        self._window: deque[bool] = deque(maxlen=window_frames)
        self._max_frames = math.ceil(cfg.max_utterance_ms / cfg.frame_ms)
        self._end_silence_ms = cfg.end_silence_ms
        self._voiced_in_window = 0
        self._in_speech = False
        self._speech_frames = 0
        self._silent_frames = 0
        self._started_at: float | None = None
        self.last_end_reason: EndReason | None = None

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def trailing_silence_ms(self) -> float:
        """Unvoiced audio since the last voiced frame of the current utterance (0 if none).

        The engine watches this to start a speculative final transcript before END.
        """
        return float(self._silent_frames * self._frame_ms) if self._in_speech else 0.0

    @property
    def speech_started_at(self) -> float | None:
        """The ``now`` passed with the START frame of the current utterance, else None."""
        return self._started_at

    @property
    def end_silence_ms(self) -> int:
        return self._end_silence_ms

    @end_silence_ms.setter
    def end_silence_ms(self, value: int) -> None:
        """Adapt the end-of-turn pause at run time (takes effect from the next frame)."""
        if value < self._frame_ms:
            raise ValueError(f"end_silence_ms must be at least frame_ms ({self._frame_ms})")
        self._end_silence_ms = int(value)

    def step(self, voiced: bool, now: float) -> VadEvent:
        """Advance one frame; ``now`` is only recorded (as ``speech_started_at``)."""
        if not self._in_speech:
            window = self._window
            if len(window) == window.maxlen and window[0]:
                self._voiced_in_window -= 1
            window.append(voiced)
            if voiced:
                self._voiced_in_window += 1
                if self._voiced_in_window >= self._start_frames:
                    self._in_speech = True
                    self._speech_frames = 1
                    self._silent_frames = 0
                    self._started_at = now
                    self._clear_window()
                    return VadEvent.START
            return VadEvent.SILENCE
        self._speech_frames += 1
        if voiced:
            self._silent_frames = 0
        else:
            self._silent_frames += 1
            if self._silent_frames * self._frame_ms >= self._end_silence_ms:
                self._end(EndReason.SILENCE)
                return VadEvent.END
        if self._speech_frames >= self._max_frames:
            self._end(EndReason.MAX_UTTERANCE)
            return VadEvent.END
        return VadEvent.SPEECH

    def force_end(self) -> bool:
        """End the utterance now (push-to-talk release); return whether one was in progress."""
        if not self._in_speech:
            return False
        self._end(EndReason.FORCED)
        return True

    def reset(self) -> None:
        """Back to silence, forgetting any partial start window."""
        self._in_speech = False
        self._speech_frames = 0
        self._silent_frames = 0
        self._started_at = None
        self.last_end_reason = None
        self._clear_window()

    def _end(self, reason: EndReason) -> None:
        self._in_speech = False
        self._speech_frames = 0
        self._silent_frames = 0
        self._started_at = None
        self.last_end_reason = reason
        self._clear_window()

    def _clear_window(self) -> None:
        self._window.clear()
        self._voiced_in_window = 0


class Endpointer:
    """webrtcvad + ``TurnDetector`` + a pre-roll ring of the frames heard before START.

    ``process`` must get exactly one frame (``config.frame_ms`` of PCM16 at
    ``config.sample_rate``). While not in speech each frame is kept in a bounded deque of
    ``preroll_ms + start_window_ms``; on START that ring is handed over whole and a fresh one
    begins, so ``take_preroll`` returns the onset exactly once and never audio already passed
    on during speech.
    """

    __slots__ = (
        "_frame_bytes",
        "_mode",
        "_preroll",
        "_probe",
        "_rate",
        "_ring",
        "_ring_len",
        "_vad",
        "config",
        "detector",
    )

    def __init__(self, config: EndpointerConfig | None = None) -> None:
        cfg = config or EndpointerConfig()
        if cfg.sample_rate not in VAD_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate must be one of {VAD_SAMPLE_RATES} for VAD, got {cfg.sample_rate!r}"
            )
        self.config = cfg
        self._rate = cfg.sample_rate
        self._frame_bytes = frame_bytes(cfg.sample_rate, cfg.frame_ms)
        self._mode = cfg.aggressiveness
        self._vad = webrtcvad.Vad(self._mode)
        self._probe: webrtcvad.Vad | None = None
        self._ring_len = max(1, math.ceil((cfg.preroll_ms + cfg.start_window_ms) / cfg.frame_ms))
        self._ring: deque[bytes] = deque(maxlen=self._ring_len)
        self._preroll: deque[bytes] | None = None
        self.detector = TurnDetector(cfg)

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def in_speech(self) -> bool:
        return self.detector.in_speech

    @property
    def trailing_silence_ms(self) -> float:
        """See ``TurnDetector.trailing_silence_ms``."""
        return self.detector.trailing_silence_ms

    @property
    def end_silence_ms(self) -> int:
        """The end-of-turn pause; settable at run time (see ``TurnDetector``)."""
        return self.detector.end_silence_ms

    @end_silence_ms.setter
    def end_silence_ms(self, value: int) -> None:
        self.detector.end_silence_ms = value

    def set_aggressiveness(self, mode: int) -> None:
        """Change webrtcvad's mode (0 = least, 3 = most eager to call a frame non-speech)."""
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {mode!r}")
        self._mode = mode
        self._vad.set_mode(mode)
        if self._probe is not None:
            self._probe.set_mode(mode)

    def is_speech(self, frame: bytes | bytearray | memoryview) -> bool:
        """The raw webrtcvad decision for one frame, with no hysteresis of ours.

        webrtcvad is itself stateful (adaptive noise model, a few frames of hangover), so this
        uses a second classifier instance: probing never changes what ``process`` decides.
        Consecutive calls still form a stream of their own.
        """
        self._check(frame)
        if self._probe is None:
            self._probe = webrtcvad.Vad(self._mode)
        return self._probe.is_speech(frame, self._rate)

    def process(self, frame: bytes | bytearray | memoryview, now: float) -> VadEvent:
        """Classify one frame and advance the turn; see ``TurnDetector.step`` for events."""
        if len(frame) != self._frame_bytes:
            self._check(frame)
        if type(frame) is not bytes:
            frame = bytes(frame)  # the caller may reuse its buffer; the ring must not alias it
        voiced = self._vad.is_speech(frame, self._rate)
        detector = self.detector
        if detector.in_speech:
            return detector.step(voiced, now)
        self._ring.append(frame)
        event = detector.step(voiced, now)
        if event is VadEvent.START:
            self._preroll = self._ring
            self._ring = deque(maxlen=self._ring_len)
        return event

    def take_preroll(self) -> list[bytes]:
        """Frames up to and including the START frame, oldest first; empty after the first call."""
        pre = self._preroll
        self._preroll = None
        return list(pre) if pre else []

    def force_end(self) -> bool:
        """End the current utterance now; return whether one was in progress."""
        return self.detector.force_end()

    def reset(self) -> None:
        """Forget the turn state, all buffered audio and the classifier's adaptation."""
        self._vad = webrtcvad.Vad(self._mode)
        self._probe = None
        self.detector.reset()
        self._ring.clear()
        self._preroll = None

    def _check(self, frame: bytes | bytearray | memoryview) -> None:
        n = memoryview(frame).nbytes
        if n != self._frame_bytes:
            raise ValueError(
                f"expected one {self.config.frame_ms} ms frame at {self._rate} Hz "
                f"({self._frame_bytes} bytes), got {n} bytes"
            )
