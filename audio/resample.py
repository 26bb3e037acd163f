"""Sample-rate conversion of PCM16, wrapping libsoxr (``soxr``).

Phone lines arrive at 8 kHz, browsers send 16 kHz or 48 kHz, recognisers want 16 kHz and TTS
voices speak at 22.05 or 24 kHz, so audio is converted at the transport edges. soxr does the
filtering properly (no aliasing when going down, flat pass band to ~0.9 Nyquist); we only
adapt it to bytes and keep the streaming state per direction of a session.

Latency note: soxr's streaming filters work in blocks, so ``StreamResampler`` at quality "HQ"
holds back audio: on average ~60 ms (up to ~115 ms) for 8 kHz <-> 16 kHz and ~20 ms
(up to ~40 ms) between the higher rates, measured with 20 ms chunks. Output arrives in bursts
rather than one chunk per chunk; downstream framing (``Reframer``) smooths that.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

SUPPORTED_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 48000)

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

_PCM_DTYPE = np.dtype("<i2")


def _check_rates(src_rate: int, dst_rate: int) -> None:
    for name, rate in (("src_rate", src_rate), ("dst_rate", dst_rate)):
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"{name} {rate!r} is not supported; use one of {SUPPORTED_RATES}")


def _as_samples(pcm: bytes | bytearray | memoryview) -> np.ndarray:
    mv = memoryview(pcm).cast("B")
    if mv.nbytes % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {mv.nbytes}")
    return np.frombuffer(mv, dtype=_PCM_DTYPE)


def resample(
    pcm: bytes | bytearray | memoryview, src_rate: int, dst_rate: int, quality: Quality = "HQ"
) -> bytes:
    """Convert a whole PCM16 buffer from ``src_rate`` to ``dst_rate`` in one shot.

    Equal rates return the input unchanged (as ``bytes``). The output holds
    ``round(n * dst_rate / src_rate)`` samples, time-aligned with the input (soxr removes its
    own filter delay in one-shot mode).
    """
    _check_rates(src_rate, dst_rate)
    samples = _as_samples(pcm)
    if src_rate == dst_rate:
        return pcm if isinstance(pcm, bytes) else bytes(pcm)
    if samples.size == 0:
        return b""
    out = soxr.resample(samples, src_rate, dst_rate, quality=quality)
    return out.astype(_PCM_DTYPE, copy=False).tobytes()


class StreamResampler:
    """Resample a stream of PCM16 chunks, keeping filter state between chunks.

    One instance per direction per session. Chunks may have any size, including an odd
    number of bytes: a dangling byte is carried to the next chunk so samples never shift.
    The soxr stream works on int16 directly, so no per-chunk float conversion happens here.
    """

    __slots__ = ("_carry", "_passthrough", "_stream", "dst_rate", "quality", "src_rate")

    def __init__(self, src_rate: int, dst_rate: int, quality: Quality = "HQ") -> None:
        _check_rates(src_rate, dst_rate)
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.quality = quality
        self._passthrough = src_rate == dst_rate
        self._stream = (
            None
            if self._passthrough
            else soxr.ResampleStream(src_rate, dst_rate, 1, dtype="int16", quality=quality)
        )
        self._carry = b""

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Feed one chunk; return whatever output the filter has ready (possibly b"")."""
        data = bytes(pcm) if not isinstance(pcm, bytes) else pcm
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) % 2:
            self._carry = data[-1:]
            data = data[:-1]
        if self._passthrough:
            return data
        if not data:
            return b""
        out = self._stream.resample_chunk(np.frombuffer(data, dtype=_PCM_DTYPE))
        return out.tobytes()

    def flush(self) -> bytes:
        """Return the tail still inside the filter and make the resampler ready for reuse.

        A dangling odd byte at end of stream cannot form a sample and is dropped.
        """
        self._carry = b""
        if self._passthrough:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=_PCM_DTYPE), last=True)
        self._stream.clear()
        return tail.tobytes()

    def reset(self) -> None:
        """Drop all buffered audio (for example on barge-in) without producing output."""
        self._carry = b""
        if self._stream is not None:
            self._stream.clear()
