"""A browser caller on the WebSocket protocol (docs/protocol.md), with a protocol 1.1 player.

    python -m loadtest.ws_caller_sim speech.wav --url ws://127.0.0.1:8080
    python -m loadtest.ws_caller_sim speech.wav --interrupt stop.wav --interrupt-after 1.0

It opens `WS /ws/{session_id}`, sends `start` (16 kHz, continuous) and waits for `ready`,
then sends 20 ms binary PCM16 frames on an absolute real-time schedule for the whole call:
the caller's speech when there is some, line silence otherwise. The agent's reply audio is
"played" by a model of the web player (`loadtest.accounting.PlayerTimeline`, fed with
arrival times, 60 ms start lead) that carries out `duck`, `pause`, `resume` and
`interrupted` as server/static/player.js does. Every message is recorded with its
arrival time, so the turn-taking evaluation can measure the agent.

Importable: `BrowserCall` (async context manager). Audio given to `say` is PCM16 mono at
the call's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from audio.resample import resample
from loadtest.accounting import PLAYER_START_LEAD_S, PlayerTimeline

RATE = 16000
FRAME_S = 0.02
#: Events by which the player yields to the caller (quieter, stopped, or cut).
YIELDS = ("duck", "pause", "interrupted")


@dataclass
class BrowserReceived:
    """What the browser received, with `time.monotonic()` arrival times."""

    #: Every JSON message: (t, message).
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: Reply audio: (t, bytes, turn).
    audio: list[tuple[float, int, int]] = field(default_factory=list)
    audio_start: dict[int, float] = field(default_factory=dict)
    audio_end: dict[int, float] = field(default_factory=dict)
    interrupted: dict[int, float] = field(default_factory=dict)
    player: PlayerTimeline = field(default_factory=PlayerTimeline)
    #: Output sample rate of each turn's audio.
    rates: dict[int, int] = field(default_factory=dict)

    def of_type(self, *types: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.events if m.get("type") in types]

    def first_audio_after(self, t: float) -> tuple[float, int] | None:
        return next(((at, turn) for at, _, turn in self.audio if at > t), None)

    def first_yield_after(self, t: float) -> tuple[float, str] | None:
        return next(((at, m["type"]) for at, m in self.of_type(*YIELDS) if at > t), None)

    def audio_seconds(self, turn: int) -> float:
        rate = self.rates.get(turn, RATE)
        return sum(n for _, n, tr in self.audio if tr == turn) / 2 / rate


@dataclass
class _Utterance:
    begin: int  # byte offsets in the outgoing stream
    end: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    start_t: float = 0.0
    end_t: float = 0.0


class BrowserCall:
    def __init__(
        self,
        url: str,
        *,
        session_id: str | None = None,
        rate: int = RATE,
        start_lead: float = PLAYER_START_LEAD_S,
    ) -> None:
        #: The server's base URL (ws://host:port); the call opens `{url}/ws/{session_id}`.
        self.url = url.rstrip("/")
        self.session_id = session_id or "eval-" + uuid.uuid4().hex[:16]
        self.rate = rate
        self.frame_bytes = int(rate * FRAME_S) * 2
        self.rx = BrowserReceived(player=PlayerTimeline(start_lead))
        self.ready: dict[str, Any] = {}
        self.closed = asyncio.Event()
        #: (start, end) monotonic times of each `say`: its first and last frame sent.
        self.spoken: list[tuple[float, float]] = []
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._out = bytearray()
        self._queued = 0  # bytes of speech queued so far
        self._sent = 0  # bytes of speech sent so far
        self._pending: list[_Utterance] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._turn = -1
        self._ready = asyncio.Event()
        self._wakeup = asyncio.Event()

    # ----------------------------------------------------------------- life cycle
    async def __aenter__(self) -> BrowserCall:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            self._ws = await asyncio.wait_for(
                self._http.ws_connect(
                    f"{self.url}/ws/{self.session_id}", max_msg_size=2**20, autoping=True
                ),
                10,
            )
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._reader())]
            await self._ws.send_json(
                {"type": "start", "sample_rate": self.rate, "mode": "continuous", "revision": 1}
            )
            await asyncio.wait_for(self._ready.wait(), 10)
        except BaseException:
            await self.hang_up()
            raise
        self._t0 = time.monotonic()
        self._tasks.append(asyncio.get_running_loop().create_task(self._pump()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hang_up()

    async def hang_up(self) -> None:
        ws, self._ws = self._ws, None
        for task in self._tasks[1:]:  # the pump first; the reader drains the close
            task.cancel()
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -------------------------------------------------------------------- caller
    async def say(self, pcm: bytes) -> tuple[float, float]:
        """Speak PCM16 audio at the call's rate in real time; returns when its last frame
        is sent, with the send times of its first and last frames."""
        pcm = pcm + bytes((-len(pcm)) % self.frame_bytes)
        utt = _Utterance(self._queued, self._queued + len(pcm))
        self._queued += len(pcm)
        self._out += pcm
        self._pending.append(utt)
        await utt.done.wait()
        self.spoken.append((utt.start_t, utt.end_t))
        return utt.start_t, utt.end_t

    async def send_json(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(message)

    async def wait_audio(self, after: float, timeout: float = 20.0) -> tuple[float, int]:
        """(arrival, turn) of the first reply audio after `after` (TimeoutError if none)."""
        async with asyncio.timeout(timeout):
            while (got := self.rx.first_audio_after(after)) is None:
                self._wakeup.clear()
                await self._wakeup.wait()
        return got

    def now_playing(self, now: float | None = None) -> bool:
        end = self.rx.player.end()
        return end is not None and (time.monotonic() if now is None else now) < end

    # ------------------------------------------------------------------ plumbing
    async def _pump(self) -> None:
        """One 20 ms frame per 20 ms of real time, on an absolute schedule."""
        n = 0
        silence = bytes(self.frame_bytes)
        while self._ws is not None:
            if self._out:
                frame = bytes(self._out[: self.frame_bytes])
                del self._out[: self.frame_bytes]
                first, self._sent = self._sent, self._sent + len(frame)
            else:
                frame, first = silence, -1
            now = time.monotonic()
            try:
                await self._ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                return
            if first >= 0:
                for utt in self._pending:
                    if utt.begin == first:
                        utt.start_t = now
                    if utt.end == self._sent:
                        utt.end_t = now
                        utt.done.set()
                self._pending = [u for u in self._pending if not u.done.is_set()]
            n += 1
            delay = self._t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _reader(self) -> None:
        assert self._ws is not None
        ws, rx = self._ws, self.rx
        try:
            async for msg in ws:
                now = time.monotonic()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    rx.audio.append((now, len(msg.data), self._turn))
                    rate = rx.rates.get(self._turn, self.rate)
                    rx.player.push(now, len(msg.data) / 2 / rate, self._turn)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    message = json.loads(msg.data)
                    rx.events.append((now, message))
                    self._handle(now, message)
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                self._wakeup.set()
        finally:
            self.closed.set()

    def _handle(self, now: float, m: dict[str, Any]) -> None:
        rx, kind = self.rx, m.get("type")
        turn = m.get("turn_id", -1)
        if kind == "ready":
            self.ready = m
            if "sample_rate" in m and m.get("sample_rate") == self.rate:
                self._ready.set()
        elif kind == "audio_start":
            self._turn = turn
            rx.audio_start[turn] = now
            rx.rates[turn] = int(m.get("sample_rate", self.rate))
            rx.player.begin(now, turn)
        elif kind == "audio_end":
            rx.audio_end[turn] = now
        elif kind == "duck":
            rx.player.duck(now, float(m.get("gain_db", -24.0)), turn)
        elif kind == "pause":
            rx.player.pause(now, turn)
        elif kind == "resume":
            rx.player.resume(now, turn)
        elif kind == "interrupted":
            rx.interrupted.setdefault(turn, now)
            rx.player.stop(now)


# ---------------------------------------------------------------------------- CLI
def _load_wav(path: str, rate: int) -> bytes:
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need mono 16-bit PCM WAV")
        native, pcm = w.getframerate(), w.readframes(w.getnframes())
    return resample(pcm, native, rate) if native != rate else pcm


async def _main(args: argparse.Namespace) -> dict[str, object]:
    speech = _load_wav(args.wav, RATE)
    interrupt = _load_wav(args.interrupt, RATE) if args.interrupt else None
    async with BrowserCall(args.url) as call:
        await asyncio.sleep(0.3)
        _, spoke_end = await call.say(speech)
        report: dict[str, object] = {"session_id": call.session_id}
        first = await call.wait_audio(spoke_end, args.timeout)
        report["end_of_speech_to_first_audio_ms"] = round((first[0] - spoke_end) * 1000)
        if interrupt is not None:
            await asyncio.sleep(max(0.0, first[0] + args.interrupt_after - time.monotonic()))
            start, _ = await call.say(interrupt)
            yielded = call.rx.first_yield_after(start)
            if yielded is not None:
                report["first_yield"] = yielded[1]
                report["yield_after_interrupt_start_ms"] = round((yielded[0] - start) * 1000)
            if first[1] in call.rx.interrupted:
                report["interrupted_after_interrupt_start_ms"] = round(
                    (call.rx.interrupted[first[1]] - start) * 1000
                )
        await asyncio.sleep(args.quiet)
        await asyncio.sleep(max(0.0, (call.rx.player.end() or 0.0) - time.monotonic()))
        player = call.rx.player
        report.update(
            turns=sorted(call.rx.audio_start),
            agent_audio_s=round(sum(call.rx.audio_seconds(t) for t in call.rx.audio_start), 2),
            heard_s=round(player.heard(), 2),
            dropped_s=round(player.dropped, 2),
            events=[m["type"] for _, m in call.rx.events],
        )
        return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wav", help="caller speech (mono 16-bit WAV, any rate)")
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="the server (ws://host:port)")
    p.add_argument("--interrupt", default="", help="a second WAV spoken over the reply")
    p.add_argument("--interrupt-after", type=float, default=1.0, help="s after reply audio")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--quiet", type=float, default=1.5, help="s to wait after the last say")
    print(json.dumps(asyncio.run(_main(p.parse_args())), indent=2))


if __name__ == "__main__":
    main()
