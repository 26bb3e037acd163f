"""One headless WebRTC caller (aiortc): the same turns as `loadtest.voice_load`'s callers,
as Opus on an audio track, with protocol v1 on the "control" data channel.

The caller's microphone loops `loadtest/speech.wav` then silence, 20 ms frames on the
media clock, from a random point of the cycle. Per turn it records the time from handing
its last speech frame to the encoder to the first audible frame of the reply it decodes:
what a person at the caller would hear, jitter buffers and codec included. A client only:
it imports nothing of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

RATE = 48000
FRAME = RATE // 50  # 20 ms
LOUD = 300  # a decoded frame with a sample above this is sound


def cycle_48k(speech_16k: bytes, silence_s: float) -> tuple[bytes, int]:
    """Speech then silence at 48 kHz, and the index of the last speech frame."""
    import soxr

    x = np.frombuffer(speech_16k, "<i2").astype(np.float32) / 32768
    y = np.clip(np.rint(soxr.resample(x, 16000, RATE) * 32768), -32768, 32767).astype("<i2")
    speech_frames = -(-len(y) // FRAME)
    total = speech_frames * FRAME + int(silence_s * RATE)
    pcm = np.zeros(total, dtype="<i2")
    pcm[: len(y)] = y
    return pcm.tobytes(), speech_frames - 1


@dataclass
class Caller:
    base_url: str
    session_id: str
    cycle: bytes
    last_speech_frame: int
    rng: random.Random
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)  # (at, ms)
    errors: int = 0
    turns_started: int = 0
    _speech_end: float = 0.0
    _waiting: bool = False

    async def connect(self, http: aiohttp.ClientSession) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = self.pc.createDataChannel("control")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        @channel.on("message")
        def _message(raw: str) -> None:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "ready" and not ready.done():
                ready.set_result(None)
            elif kind == "ping":
                channel.send('{"type":"pong"}')
            elif kind == "error":
                self.errors += 1

        self.pc.addTrack(_mic_track(self))
        self.pc.on("track", lambda track: self._listen(track))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {
            "type": "offer",
            "sdp": self.pc.localDescription.sdp,
            "session_id": self.session_id,
            "mode": "continuous",
        }
        async with http.post(f"{self.base_url}/api/webrtc/offer", json=body) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        async with asyncio.timeout(20):
            await ready

    def spoke(self, frame_index: int) -> None:
        """The mic track just handed frame `frame_index` of the cycle to the encoder."""
        if frame_index == self.last_speech_frame:
            self._speech_end = time.monotonic()
            self._waiting = True
            self.turns_started += 1

    def _listen(self, track: Any) -> None:
        self._listener = asyncio.ensure_future(self._hear(track))

    async def _hear(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not self._waiting:
                    continue
                if int(np.abs(frame.to_ndarray()).max()) > LOUD:
                    now = time.monotonic()
                    self.latencies_ms.append((now, (now - self._speech_end) * 1000))
                    self._waiting = False

    async def close(self) -> None:
        await self.pc.close()
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def _mic_track(caller: Caller) -> Any:
    import av
    from aiortc import MediaStreamTrack

    cycle = caller.cycle
    frames = len(cycle) // (FRAME * 2)
    time_base = fractions.Fraction(1, RATE)

    class Mic(MediaStreamTrack):  # type: ignore[misc]
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.index = caller.rng.randrange(frames)
            self.pts = -1
            self.start = 0.0

        async def recv(self) -> Any:
            if self.pts < 0:
                self.start, self.pts = time.monotonic(), 0
            else:
                self.pts += FRAME
                wait = self.start + self.pts / RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            i = self.index % frames
            self.index += 1
            frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
            frame.planes[0].update(cycle[i * FRAME * 2 : (i + 1) * FRAME * 2])
            frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, time_base
            caller.spoke(i)
            return frame

    return Mic()
