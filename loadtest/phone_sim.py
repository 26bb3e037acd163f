"""A phone caller, as Twilio Media Streams presents one to the server.

    python -m loadtest.phone_sim speech.wav --url ws://127.0.0.1:8080/twilio/stream
    python -m loadtest.phone_sim speech.wav --interrupt stop.wav --interrupt-after 1.0

Like Twilio, it first asks the server's voice webhook (`POST /twilio/voice`, beside the
stream URL, signed when an auth token is given) how to answer the call, and sends the
TwiML's Stream parameters (the call's one-use stream token among them) in `start`.
It sends `connected` and `start` like Twilio, then a 20 ms mu-law `media` frame every 20 ms
of real time for the whole call (the caller's speech when there is some, line silence
otherwise), and `stop` to hang up. The agent's `media` is "played" in real time: each `mark`
is echoed back when the audio before it has played, and `clear` empties the playback buffer
and echoes the pending marks at once, as Twilio does. Every media/mark/clear is recorded
with its arrival time, so tests and the turn-taking evaluation can measure the agent.

The server also clears to duck, pause and resume a reply while the caller may be barging
in (protocol v1.1 on the phone: the unheard audio is sent again after the `clear`), so a
`clear` is a *cut* only when none of the reply it cleared comes again (`Received.cuts`);
the others are the agent yielding (`Received.yields`). Marks flushed by a `clear` are
echoed but recorded apart (`Received.flushed`), never as audio played (`acks`).

Importable: `PhoneCall` (async context manager) and `load_wav`. Audio given to `say` is
PCM16 mono at 8 kHz; `load_wav` converts any WAV.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import time
import urllib.parse
import uuid
import wave
import xml.etree.ElementTree as ElementTree
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import websockets

from audio.mulaw import mulaw_decode, mulaw_encode
from audio.resample import resample

RATE = 8000
FRAME_BYTES = 160  # 20 ms of mu-law
FRAME_S = 0.02
_SILENCE = b"\xff" * FRAME_BYTES  # mu-law code of 0
_END_MARK = re.compile(r"-end(\.\d+)?$")


def load_wav(path: str | Path) -> bytes:
    """A mono (or first-channel) 16-bit WAV as PCM16 at 8 kHz."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    if channels > 1:
        import numpy as np

        pcm = np.frombuffer(pcm, dtype="<i2")[::channels].tobytes()
    return resample(pcm, rate, RATE) if rate != RATE else pcm


@dataclass
class Received:
    """What the caller's line received, with `time.monotonic()` arrival times."""

    media: list[tuple[float, int]] = field(default_factory=list)  # (t, mu-law bytes)
    media_turn: list[int] = field(default_factory=list)  # turn of each media (from marks)
    marks: list[tuple[float, str]] = field(default_factory=list)
    acks: list[tuple[float, str]] = field(default_factory=list)
    #: Marks echoed at once because a `clear` dropped the audio before them.
    flushed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    #: How many media had arrived at each clear (the same index as `clears`).
    clear_media: list[int] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # agent audio, mu-law

    def _cleared_turn(self, i: int) -> int:
        n = self.clear_media[i]
        return self.media_turn[n - 1] if n else -1

    def cuts(self) -> list[float]:
        """Clears after which nothing more of the reply they cleared came: barge-ins. A
        pause's clear right before the cut (no media between the two) is the agent
        yielding, not a second cut."""
        out = []
        for i, t in enumerate(self.clears):
            turn, n = self._cleared_turn(i), self.clear_media[i]
            if turn >= 0 and turn in self.media_turn[n:]:
                continue  # the reply came again
            if i + 1 < len(self.clears) and self.clear_media[i + 1] == n:
                continue  # another clear follows before any media: that one is the cut
            out.append(t)
        return out

    def yields(self) -> list[float]:
        """Clears after which the reply came again (ducked, or resumed): the agent yielding."""
        cut = set(self.cuts())
        return [t for t in self.clears if t not in cut]

    def media_after(self, t: float) -> list[tuple[float, int]]:
        return [m for m in self.media if m[0] > t]

    def first_media_after(self, t: float) -> float | None:
        return next((m[0] for m in self.media if m[0] > t), None)

    def turns(self) -> list[int]:
        seen: list[int] = []
        for turn in self.media_turn:
            if turn >= 0 and turn not in seen:
                seen.append(turn)
        return seen


def voice_url_for(stream_url: str) -> str:
    """ws://host/twilio/stream -> http://host/twilio/voice (the webhook beside the stream)."""
    parts = urllib.parse.urlsplit(stream_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rsplit("/", 1)[0] + "/voice"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def stream_parameters(twiml: str) -> dict[str, str]:
    """The `<Parameter>`s of the `<Stream>` in a TwiML answer (Twilio's customParameters)."""
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        raise ValueError("the TwiML answer connects no stream")
    return {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


class PhoneCall:
    def __init__(
        self,
        url: str,
        *,
        call_sid: str | None = None,
        auth_token: str = "",
        signed_url: str | None = None,
        parameters: dict[str, str] | None = None,
        answer: bool = True,
    ) -> None:
        self.url = url
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.auth_token = auth_token
        self.signed_url = signed_url or url
        #: Sent in `start.customParameters`, over what the voice webhook's TwiML gave.
        self.parameters = parameters or {}
        #: Ask the voice webhook first, as Twilio does (False: open the stream directly).
        self.answer = answer
        self.rx = Received()
        #: (start, end) monotonic times of each `say`, as sent on the line.
        self.spoken: list[tuple[float, float]] = []
        self.closed = asyncio.Event()
        self._ws: websockets.ClientConnection | None = None
        self._out = bytearray()
        self._drained = asyncio.Event()
        self._seq = 0
        self._chunk = 0
        self._play_end = 0.0
        self._pending_marks: deque[tuple[float, str]] = deque()
        self._flushing: set[str] = set()  # pending marks a clear flushed
        self._unassigned = 0  # media since the last mark, not yet attributed to a turn
        self._tasks: list[asyncio.Task[None]] = []
        self._mark_wakeup = asyncio.Event()
        self._got_media = asyncio.Event()
        self._acked = asyncio.Event()
        self._cleared = asyncio.Event()

    # ----------------------------------------------------------------- life cycle
    async def answer_call(self) -> dict[str, str]:
        """POST the call to the voice webhook like Twilio; the Stream parameters it gives."""
        form = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32}
        if self.parameters.get("from"):
            form["From"] = self.parameters["from"]
        url = voice_url_for(self.url)
        headers = {}
        if self.auth_token:
            from twilio.request_validator import RequestValidator

            signed = voice_url_for(self.signed_url)
            headers["X-Twilio-Signature"] = RequestValidator(self.auth_token).compute_signature(
                signed, form
            )
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(url, data=form, headers=headers) as response:
                body = await response.text()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}: {body[:200]}")
        return stream_parameters(body)

    async def __aenter__(self) -> PhoneCall:
        if self.answer:
            self.parameters = {**await self.answer_call(), **self.parameters}
        headers = {}
        if self.auth_token:
            from twilio.request_validator import RequestValidator

            sig = RequestValidator(self.auth_token).compute_signature(self.signed_url, {})
            headers["X-Twilio-Signature"] = sig
        self._ws = await asyncio.wait_for(
            websockets.connect(self.url, additional_headers=headers, max_size=2**20), 10
        )
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "sequenceNumber": str(self._next_seq()),
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                    "customParameters": self.parameters,
                },
                "streamSid": self.stream_sid,
            }
        )
        loop = asyncio.get_running_loop()
        self._t0 = time.monotonic()
        self._tasks = [
            loop.create_task(self._pump()),
            loop.create_task(self._reader()),
            loop.create_task(self._acker()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hang_up()

    async def hang_up(self) -> None:
        if self._ws is None:
            return
        ws, self._ws = self._ws, None
        for task in self._tasks[:1] + self._tasks[2:]:  # pump and acker; the reader drains
            task.cancel()
        with contextlib.suppress(Exception):
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(self._next_seq()),
                                      "streamSid": self.stream_sid,
                                      "stop": {"callSid": self.call_sid}}))  # fmt: skip
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -------------------------------------------------------------------- caller
    async def say(self, pcm8k: bytes) -> tuple[float, float]:
        """Speak PCM16 8 kHz audio at real-time pace; returns when its last frame is sent."""
        ulaw = mulaw_encode(pcm8k)
        ulaw += _SILENCE[: (-len(ulaw)) % FRAME_BYTES]
        self._drained.clear()
        start = time.monotonic() + len(self._out) / RATE
        self._out += ulaw
        await self._drained.wait()
        end = time.monotonic()
        self.spoken.append((start, end))
        return start, end

    async def wait_media(self, after: float, timeout: float = 20.0) -> float:
        """Time the first agent media after `after` arrived (TimeoutError if none)."""
        async with asyncio.timeout(timeout):
            while (t := self.rx.first_media_after(after)) is None:
                self._got_media.clear()
                await self._got_media.wait()
        return t

    async def wait_quiet(self, quiet: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until the agent's audio has finished playing and nothing came for `quiet` s."""
        async with asyncio.timeout(timeout):
            while True:
                now = time.monotonic()
                last = self.rx.media[-1][0] if self.rx.media else 0.0
                if now - last >= quiet and now >= self._play_end:
                    return
                await asyncio.sleep(0.05)

    async def wait_reply_played(self, after: float, timeout: float = 30.0) -> str:
        """Wait until a whole reply (its `t<turn>-end` mark) has played after `after`;
        returns the mark's name."""
        async with asyncio.timeout(timeout):
            while True:
                for t, name in self.rx.acks:
                    if t > after and _END_MARK.search(name):
                        return name
                self._acked.clear()
                await self._acked.wait()

    async def wait_clear(self, timeout: float) -> bool:
        """Wait up to `timeout` s for a `clear`; whether one has come."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                while not self.rx.clears:
                    self._cleared.clear()
                    await self._cleared.wait()
        return bool(self.rx.clears)

    @property
    def playing(self) -> bool:
        return time.monotonic() < self._play_end

    def agent_pcm(self) -> bytes:
        """Everything the agent sent, as PCM16 8 kHz."""
        return mulaw_decode(bytes(self.rx.audio))

    # ------------------------------------------------------------------ plumbing
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _send(self, message: dict[str, object]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message, separators=(",", ":")))

    async def _pump(self) -> None:
        """One 20 ms inbound frame per 20 ms of real time, on an absolute schedule."""
        n = 0
        while True:
            if self._out:
                frame = bytes(self._out[:FRAME_BYTES])
                del self._out[:FRAME_BYTES]
            else:
                frame = _SILENCE
            self._chunk += 1
            await self._send(
                {
                    "event": "media",
                    "sequenceNumber": str(self._next_seq()),
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(n * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                    "streamSid": self.stream_sid,
                }
            )
            if not self._out:
                self._drained.set()
            n += 1
            delay = self._t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _reader(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for raw in ws:
                now = time.monotonic()
                message = json.loads(raw)
                event = message.get("event")
                if event == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    self.rx.media.append((now, len(payload)))
                    self.rx.media_turn.append(-1)
                    self._unassigned += 1
                    self.rx.audio += payload
                    self._play_end = max(now, self._play_end) + len(payload) / RATE
                    self._got_media.set()
                elif event == "mark":
                    name = message["mark"]["name"]
                    self.rx.marks.append((now, name))
                    self._assign(name)
                    self._pending_marks.append((max(now, self._play_end), name))
                    self._mark_wakeup.set()
                elif event == "clear":
                    self.rx.clears.append(now)
                    self.rx.clear_media.append(len(self.rx.media))
                    self._cleared.set()
                    self._play_end = now
                    self._flushing.update(n for _, n in self._pending_marks)
                    self._pending_marks = deque((now, n) for _, n in self._pending_marks)
                    self._mark_wakeup.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def _assign(self, mark: str) -> None:
        try:
            turn = int(mark.split("-")[0].lstrip("t"))
        except ValueError:
            turn = -1
        n = len(self.rx.media_turn)
        for i in range(n - self._unassigned, n):
            self.rx.media_turn[i] = turn
        self._unassigned = 0

    async def _acker(self) -> None:
        """Echo each mark when the audio before it has played (Twilio's behaviour)."""
        while True:
            if not self._pending_marks:
                self._mark_wakeup.clear()
                await self._mark_wakeup.wait()
                continue
            due, name = self._pending_marks[0]
            delay = due - time.monotonic()
            if delay > 0:
                self._mark_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._mark_wakeup.wait(), delay)
                continue
            self._pending_marks.popleft()
            if name in self._flushing:
                self._flushing.discard(name)
                self.rx.flushed.append((time.monotonic(), name))
            else:
                self.rx.acks.append((time.monotonic(), name))
            self._acked.set()
            await self._send(
                {
                    "event": "mark",
                    "sequenceNumber": str(self._next_seq()),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )


# ---------------------------------------------------------------------------- CLI
async def _main(args: argparse.Namespace) -> dict[str, object]:
    speech = load_wav(args.wav) + bytes(int(0.02 * RATE) * 2)
    interrupt = load_wav(args.interrupt) if args.interrupt else None
    async with PhoneCall(args.url, auth_token=args.auth_token, signed_url=args.signed_url) as call:
        await asyncio.sleep(0.3)
        _, spoke_end = await call.say(speech)
        report: dict[str, object] = {"call_sid": call.call_sid}
        try:
            first = await call.wait_media(spoke_end, args.timeout)
        except TimeoutError:
            report["error"] = f"no reply within {args.timeout} s"
            return report
        report["end_of_speech_to_first_audio_ms"] = round((first - spoke_end) * 1000)
        if interrupt is not None:
            await asyncio.sleep(args.interrupt_after)
            int_start, _ = await call.say(interrupt)
            report["interrupt_started_s"] = round(int_start - first, 3)
            if call.rx.clears:
                report["clear_after_interrupt_start_ms"] = round(
                    (call.rx.clears[0] - int_start) * 1000
                )
        await call.wait_quiet(args.quiet, args.timeout + 30)
        rx = call.rx
        report.update(
            media_messages=len(rx.media),
            agent_audio_s=round(len(rx.audio) / RATE, 2),
            marks=len(rx.marks),
            acks=len(rx.acks),
            clears=len(rx.clears),
            reply_turns=rx.turns(),
        )
        if args.save_reply:
            with wave.open(args.save_reply, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(call.agent_pcm())
        return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wav", help="caller speech (16-bit WAV, any rate)")
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio/stream")
    p.add_argument("--auth-token", default="", help="TWILIO_AUTH_TOKEN, to sign the request")
    p.add_argument("--signed-url", default=None, help="URL the server validates (default --url)")
    p.add_argument("--interrupt", default="", help="a second WAV spoken over the reply")
    p.add_argument("--interrupt-after", type=float, default=1.0, help="s after reply audio")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--quiet", type=float, default=1.5, help="agent silence that ends the call")
    p.add_argument("--save-reply", default="", help="write the agent's audio to this WAV")
    return p


def main() -> None:
    args = _parser().parse_args()
    print(json.dumps(asyncio.run(_main(args)), indent=2))


if __name__ == "__main__":
    main()
