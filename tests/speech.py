"""Test speech, made by the tests themselves with the bundled Piper voice (clean speech
that Whisper tiny recognises reliably), plus a word-error-rate helper."""

from __future__ import annotations

import functools
import re
import wave
from pathlib import Path

import numpy as np

from audio.resample import resample

RATE = 16000


@functools.cache
def _voice():  # type: ignore[no-untyped-def]
    from pipelines.tts.piper import PiperVoiceHolder

    return PiperVoiceHolder()


def synth(text: str, rate: int = RATE) -> bytes:
    """PCM16 mono speech at `rate`, the same every time: Piper samples noise inside its
    model (a run now and then came out as speech Whisper tiny misheard), so the tests
    turn the noise off."""
    from piper import SynthesisConfig

    holder = _voice()
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_int16_array for c in holder.get().synthesize(text, syn_config=quiet)]
    pcm = np.concatenate(chunks).astype("<i2", copy=False).tobytes() if chunks else b""
    return resample(pcm, holder.sample_rate, rate) if holder.sample_rate != rate else pcm


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance / reference length."""
    ref, hyp = words(reference), words(hypothesis)
    d = np.zeros((len(ref) + 1, len(hyp) + 1), dtype=int)
    d[:, 0] = np.arange(len(ref) + 1)
    d[0, :] = np.arange(len(hyp) + 1)
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            cost = 0 if ref[i - 1] == hyp[j - 1] else 1
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + cost)
    return d[len(ref), len(hyp)] / max(1, len(ref))
