"""A toy "speech" code so a fake recogniser can hear words in PCM.

Each word of `VOCAB` is a run of one constant sample value (1000 + 100 * index), words
are separated by silence. The fake recognisers decode what they actually received, so a
lost, duplicated or reordered piece of audio shows up as a wrong transcript.
"""

from __future__ import annotations

import numpy as np

VOCAB = (
    "spaced repetition helps memory because retrieval strengthens recall the brain forgets "
    "quickly without review photosynthesis turns light into chemical energy plants store "
    "sugar and i learned today about how it works"
).split()
RATE = 16000
WORD_MS = 120
GAP_MS = 40
_MIN_SAMPLES = 80


def code_of(word: str) -> int:
    return 1000 + 100 * VOCAB.index(word)


def encode(text: str, rate: int = RATE, word_ms: int = WORD_MS, gap_ms: int = GAP_MS) -> bytes:
    parts = []
    gap = np.zeros(rate * gap_ms // 1000, dtype="<i2")
    for word in text.lower().split():
        parts.append(np.full(rate * word_ms // 1000, code_of(word), dtype="<i2"))
        parts.append(gap)
    return np.concatenate(parts).tobytes() if parts else b""


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def decode(pcm: bytes) -> list[str]:
    """Words in `pcm`, in order (a word cut at the end of the buffer counts)."""
    n = len(pcm) // 2
    if n == 0:
        return []
    samples = np.frombuffer(pcm[: n * 2], dtype="<i2").astype(np.int32)
    change = np.flatnonzero(np.diff(samples)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    words = []
    for s, e in zip(starts, ends, strict=True):
        v = int(samples[s])
        if v == 0 or e - s < _MIN_SAMPLES or (v - 1000) % 100:
            continue
        index = (v - 1000) // 100
        if 0 <= index < len(VOCAB):
            words.append(VOCAB[index])
    return words


def trailing_silence_ms(pcm: bytes, rate: int = RATE) -> float:
    n = len(pcm) // 2
    if n == 0:
        return 0.0
    samples = np.frombuffer(pcm[: n * 2], dtype="<i2")
    nonzero = np.flatnonzero(samples)
    quiet = n if nonzero.size == 0 else n - 1 - int(nonzero[-1])
    return quiet * 1000 / rate


def tone(ms: int, rate: int, seed: int = 0) -> bytes:
    """Deterministic 'speech' for the fake TTS endpoints: a 220 Hz tone plus a ramp."""
    t = np.arange(rate * ms // 1000)
    wave = 8000 * np.sin(2 * np.pi * 220 * t / rate) + (t + seed) % 97
    return wave.astype("<i2").tobytes()
