"""A real WebRTC peer for the tests (aiortc): it posts an offer to `/api/webrtc/offer`,
opens the "control" data channel, sends PCM as Opus and collects what the server says and
plays. It is a second, independent RTCPeerConnection on loopback, not a mock."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np

from server.transports import webrtc_media


class WebRTCPeer:
    def __init__(self, base_url: str, session_id: str, **offer: Any) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base_url = base_url.rstrip("/")
        self.session_id = session_id
        self.offer_fields = offer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("control")
        self.mic = webrtc_media.reply_track_class()()  # 20 ms frames on the media clock
        self.pc.addTrack(self.mic)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.heard = bytearray()  # what the server played, 48 kHz mono
        self.opened = asyncio.Event()
        self.status = 0
        self.answer: dict[str, Any] = {}
        self._listener: asyncio.Task[None] | None = None
        self._loud_waiters: list[tuple[float, asyncio.Event]] = []
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        if message["type"] == "ping":
            self.send({"type": "pong"})
        self.seen.append(message)
        self.messages.put_nowait(message)

    def _on_track(self, track: Any) -> None:
        self._listener = asyncio.ensure_future(self._listen(track))

    async def _listen(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                self.heard += webrtc_media.mono_s16(await track.recv())
                if self._loud_waiters:
                    loud = self.loud_ms()
                    for ms, event in self._loud_waiters:
                        if loud >= ms:
                            event.set()

    async def offer(
        self,
        http: aiohttp.ClientSession,
        path: Callable[[str], str] | None = None,
        back: Callable[[str], str] | None = None,
        **extra: Any,
    ) -> int:
        """Post the offer; on 200 apply the answer. The HTTP status. `path` and `back` may
        edit the offer and the answer on their way (e.g. candidates through a relay)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        body = {
            "sdp": path(sdp) if path else sdp,
            "type": "offer",
            "session_id": self.session_id,
            **self.offer_fields,
            **extra,
        }
        async with http.post(f"{self.base_url}/api/webrtc/offer", json=body) as resp:
            self.status = resp.status
            self.answer = await resp.json()
        if resp.status == 200:
            from aiortc import RTCSessionDescription

            answer = back(self.answer["sdp"]) if back else self.answer["sdp"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return resp.status

    async def connect(
        self, http: aiohttp.ClientSession, timeout: float = 10, **edits: Any
    ) -> dict[str, Any]:
        """Offer, answer, and the server's `ready`."""
        status = await self.offer(http, **edits)
        assert status == 200, self.answer
        return await self.until("ready", timeout)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def speak(self, pcm48k: bytes) -> None:
        self.mic.play(0, pcm48k)

    async def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (message := await self.messages.get())["type"] != kind:
                pass
        return message

    def loud_ms(self, threshold: int = 500) -> float:
        """How much of what was played was not silence (ms)."""
        samples = np.frombuffer(bytes(self.heard), dtype="<i2")
        frames = samples[: len(samples) // 960 * 960].reshape(-1, 960)
        return float((np.abs(frames).max(axis=1) > threshold).sum() * 20)

    async def until_loud(self, ms: float, timeout: float = 10) -> None:
        """Until `ms` of what the server played was not silence."""
        event = asyncio.Event()
        self._loud_waiters.append((ms, event))
        try:
            if self.loud_ms() >= ms:
                return
            async with asyncio.timeout(timeout):
                await event.wait()
        finally:
            self._loud_waiters.remove((ms, event))

    async def close(self) -> None:
        await self.pc.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
