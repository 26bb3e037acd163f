"""PCM16 helpers: the one sample format that moves through the server.

Everything on the wire and between stages is 16-bit little-endian mono PCM. These helpers
convert at the edges (to float for maths, back to bytes for the wire) and measure levels.
They validate lengths because an odd byte count means the caller has lost sample alignment,
which silently turns speech into noise if it goes unnoticed.
"""

from __future__ import annotations

import math

import numpy as np

#: The level reported for silence or empty input. A finite floor (rather than -inf) keeps
#: levels JSON-serialisable and comparable; one LSB of RMS is already -90.3 dBFS, so no
#: non-silent signal is ever clamped to it.
SILENCE_DBFS = -120.0

_INT16_SCALE = 32768.0
_PCM_DTYPE = np.dtype("<i2")


def _check_even(nbytes: int) -> None:
    if nbytes % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {nbytes}")


def pcm16_to_float(pcm: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode PCM16 LE into float32 samples in [-1, 1) (scale 1/32768, so -32768 -> -1.0)."""
    mv = memoryview(pcm).cast("B")
    _check_even(mv.nbytes)
    return np.frombuffer(mv, dtype=_PCM_DTYPE).astype(np.float32) / np.float32(_INT16_SCALE)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Encode float samples as PCM16 LE: clip to [-1, 1], scale by 32768, round to nearest.

    Using the same 32768 scale as ``pcm16_to_float`` makes PCM16 -> float -> PCM16 lossless
    for every sample; the one value that would overflow (+1.0 -> 32768) saturates to 32767.
    """
    arr = np.asarray(samples, dtype=np.float32)
    scaled = np.rint(np.clip(arr, -1.0, 1.0) * np.float32(_INT16_SCALE))
    return np.clip(scaled, -32768.0, 32767.0).astype(_PCM_DTYPE).tobytes()


def rms_dbfs(pcm: bytes | bytearray | memoryview) -> float:
    """RMS level of PCM16 in dBFS (full-scale square wave = 0, full-scale sine ~ -3.01).

    Returns ``SILENCE_DBFS`` (-120.0) for empty input or digital silence, never -inf.
    """
    mv = memoryview(pcm).cast("B")
    _check_even(mv.nbytes)
    if mv.nbytes == 0:
        return SILENCE_DBFS
    x = np.frombuffer(mv, dtype=_PCM_DTYPE).astype(np.float64)
    mean_square = float(np.dot(x, x)) / x.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    level = 10.0 * math.log10(mean_square / (_INT16_SCALE * _INT16_SCALE))
    return max(level, SILENCE_DBFS)


def frame_bytes(sample_rate: int, frame_ms: int) -> int:
    """Bytes in one PCM16 mono frame of ``frame_ms`` at ``sample_rate``.

    Raises ValueError when the frame would not hold a whole number of samples (for example
    10 ms at 22050 Hz), because a fractional frame cannot be cut without drifting.
    """
    if sample_rate <= 0 or frame_ms <= 0:
        raise ValueError(f"sample_rate and frame_ms must be positive: {sample_rate}, {frame_ms}")
    samples, rem = divmod(sample_rate * frame_ms, 1000)
    if rem:
        raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return samples * 2


def gain_db_to_factor(gain_db: float) -> float:
    """A level change in dB as an amplitude factor (-24 dB -> ~0.063)."""
    return float(10.0 ** (gain_db / 20.0))


def scale(pcm: bytes | bytearray | memoryview, factor: float) -> bytes:
    """PCM16 LE with every sample multiplied by `factor` (rounded, saturated)."""
    mv = memoryview(pcm).cast("B")
    _check_even(mv.nbytes)
    if factor == 1.0:  # the common case on the phone's send path: no copy
        return pcm if isinstance(pcm, bytes) else bytes(mv)
    x = np.frombuffer(mv, dtype=_PCM_DTYPE).astype(np.float32) * np.float32(factor)
    return np.clip(np.rint(x), -32768.0, 32767.0).astype(_PCM_DTYPE).tobytes()
