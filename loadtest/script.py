"""What every simulated caller says: one utterance, then silence, over and over.

The cycle is cut into 20 ms frames once and each frame is framed and masked for the wire
once (`wire.masked_frame`), so all callers share the same ready bytes. The frame index of
the last speech frame marks "end of speech"; `vad_hangover_frames` says how many frames
after it webrtcvad (the server's VAD) still calls speech, measured with webrtcvad itself
on this very cycle, so a report can show that share of the latency separately.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.wire import OP_BINARY, masked_frame

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
DEFAULT_WAV = Path(__file__).with_name("speech.wav")


def read_wav(path: Path) -> bytes:
    """A mono PCM16 WAV as 16 kHz PCM16 (resampled with soxr when needed)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need a mono 16-bit PCM WAV")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    if rate == RATE:
        return pcm
    import soxr

    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    y = soxr.resample(x, rate, RATE)
    return np.clip(np.rint(y * 32768), -32768, 32767).astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Script:
    """One turn's audio as frames: speech frames [0, speech_frames), then silence."""

    frames: tuple[bytes, ...]
    wire: tuple[bytes, ...]
    speech_frames: int
    vad_hangover_frames: int
    vad_mode: int
    end_silence_ms: int

    @property
    def cycle(self) -> int:
        return len(self.frames)

    @property
    def last_speech(self) -> int:
        """Index of the frame whose sending is "end of speech"."""
        return self.speech_frames - 1

    @property
    def endpoint_frame(self) -> int:
        """Index of the frame at which the server's endpointer should end the turn."""
        return self.last_speech + self.vad_hangover_frames + self.end_silence_ms // FRAME_MS

    @property
    def vad_hangover_s(self) -> float:
        return self.vad_hangover_frames * FRAME_MS / 1000

    @property
    def cycle_s(self) -> float:
        return self.cycle * FRAME_MS / 1000


def build_script(
    wav: Path = DEFAULT_WAV,
    silence_s: float = 2.5,
    vad_mode: int = 2,
    end_silence_ms: int = 200,
) -> Script:
    pcm = read_wav(wav)
    whole = len(pcm) // FRAME_BYTES
    if whole < 10:
        raise ValueError(f"{wav}: under 200 ms of audio")
    speech = [pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(whole)]
    quiet = bytes(FRAME_BYTES)
    silent = round(silence_s * 1000 / FRAME_MS)
    if silent * FRAME_MS < end_silence_ms + 1000:
        raise ValueError("the silence must outlast the endpointing silence by a second")
    frames = tuple(speech + [quiet] * silent)
    key = b"\x5a\x17\xc3\x9e"
    wire = tuple(masked_frame(OP_BINARY, f, key) for f in frames)
    hangover = measure_hangover(frames, len(speech), vad_mode)
    return Script(frames, wire, len(speech), hangover, vad_mode, end_silence_ms)


def measure_hangover(frames: tuple[bytes, ...], speech_frames: int, mode: int) -> int:
    """Frames after the last speech frame that webrtcvad still calls speech (third cycle,
    once its noise model has settled; the same on every cycle of this fixture)."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    decisions: list[bool] = []
    for _ in range(3):
        decisions = [vad.is_speech(f, RATE) for f in frames]
    voiced = [i for i, d in enumerate(decisions) if d]
    return max(0, voiced[-1] - (speech_frames - 1)) if voiced else 0
