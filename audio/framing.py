"""Cut an arbitrary byte stream of PCM16 into exact fixed-duration frames.

Clients send audio in whatever chunk sizes their platform produces (a browser worklet's 128
samples, a phone gateway's 20 ms, a file upload's 64 KiB), but webrtcvad and the recognisers
want exact 10/20/30 ms frames. This runs for every chunk of every session, so it is plain
bytes slicing with a single bytearray carry buffer, no numpy.
"""

from __future__ import annotations

from audio.pcm import frame_bytes

ALLOWED_FRAME_MS: tuple[int, ...] = (10, 20, 30)


class Reframer:
    """Accumulates PCM16 chunks and yields whole frames; the remainder waits for the next push.

    Because frames hold an even number of bytes and any remainder (including a lone odd byte)
    is carried over byte for byte, a chunk of odd length never shifts sample alignment.
    """

    __slots__ = ("_buf", "frame_bytes", "frame_ms", "sample_rate")

    def __init__(self, sample_rate: int = 16000, frame_ms: int = 20) -> None:
        if frame_ms not in ALLOWED_FRAME_MS:
            raise ValueError(f"frame_ms must be one of {ALLOWED_FRAME_MS}, got {frame_ms!r}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = frame_bytes(sample_rate, frame_ms)
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of their frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame (for example when a new turn starts)."""
        self._buf.clear()

    def flush(self) -> bytes | None:
        """The partial frame held back, padded with silence to a whole frame (None if there
        is none), and the buffer emptied: the end of a turn, so its last few milliseconds
        go to that turn's recogniser and never to the next turn's."""
        if not self._buf:
            return None
        frame = bytes(self._buf[: self.frame_bytes]).ljust(self.frame_bytes, b"\0")
        self._buf.clear()
        return frame

    def push(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add a chunk and return every complete frame now available, oldest first."""
        fb = self.frame_bytes
        buf = self._buf
        if not buf:
            n = len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes
            if n == fb:
                # Hot path: the client already sends exact frames.
                return [bytes(chunk)]
            end = n - n % fb
            with memoryview(chunk).cast("B") as mv:
                frames = [mv[i : i + fb].tobytes() for i in range(0, end, fb)]
                if end < n:
                    buf += mv[end:]
            return frames
        buf += chunk
        end = len(buf) - len(buf) % fb
        if not end:
            return []
        with memoryview(buf) as mv:
            frames = [mv[i : i + fb].tobytes() for i in range(0, end, fb)]
        del buf[:end]
        return frames
