"""A small command-line client: stream a WAV file to the server as a user would speak it,
print the transcripts and the reply, and save the reply audio.

    python -m server.client speech.wav [--url ws://127.0.0.1:8080] [--mode push_to_talk]

Audio is sent in 20 ms frames at real-time pace (``--fast`` sends as fast as possible),
followed by silence so the server's endpointer can hear the end of the turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any

import websockets

from audio.resample import resample

RATE = 16000
FRAME_BYTES = RATE * 2 * 20 // 1000


@dataclass
class TurnResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    reply: str = ""
    audio: bytearray = field(default_factory=bytearray)
    audio_frames: int = 0
    #: Seconds from the last speech frame sent to the first reply audio frame received.
    first_audio_latency: float | None = None
    interrupted: bool = False

    @property
    def final_transcript(self) -> str:
        finals = [t["text"] for t in self.transcripts if t["final"]]
        return " ".join(finals)


def read_wav(path: str) -> bytes:
    """A mono PCM16 WAV as 16 kHz PCM16."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need mono 16-bit PCM WAV")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    return resample(pcm, rate, RATE) if rate != RATE else pcm


def write_wav(path: str, pcm: bytes, rate: int) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


class Conversation:
    """One WebSocket conversation; `turn()` speaks one utterance and collects the reply."""

    def __init__(self, ws: Any, ready: dict[str, Any], tts: bool = True) -> None:
        self.ws = ws
        self.ready = ready
        #: Without speech the reply ends at `response_done` (no `audio_end` follows).
        self.tts = tts
        self.output_rate = ready["output_sample_rate"]
        self._speech_end: float | None = None
        #: The learner credential of this conversation (to resume it, or use the HTTP API).
        self.learner_token: str | None = None

    @classmethod
    async def connect(
        cls,
        base_url: str,
        session_id: str,
        mode: str = "continuous",
        tts: bool = True,
        token: str | None = None,
    ) -> Conversation:
        """`token`: the learner credential (sent in `start`, not in the URL); without one
        the server makes a new learner and its credential is `learner_token`."""
        ws = await websockets.connect(f"{base_url.rstrip('/')}/ws/{session_id}", max_size=2**22)
        await ws.recv()  # ready (defaults)
        start: dict[str, Any] = {"type": "start", "mode": mode, "tts": tts}
        if token:
            start["token"] = token
        await ws.send(json.dumps(start))
        ready = json.loads(await ws.recv())
        if ready.get("type") == "error":
            await ws.close()
            raise ConnectionError(f"{ready['code']}: {ready['message']}")
        conv = cls(ws, ready, tts)
        conv.learner_token = ready.get("learner_token", token)
        return conv

    async def close(self) -> str:
        await self.ws.send(json.dumps({"type": "end"}))
        summary = ""
        async for msg in self.ws:
            if isinstance(msg, str):
                data = json.loads(msg)
                if data["type"] == "summary":
                    summary = data["text"]
        return summary

    async def turn(
        self,
        pcm: bytes,
        *,
        mode: str = "continuous",
        realtime: bool = True,
        trailing_silence: float = 1.5,
        timeout: float = 30.0,
        on_event: Any = None,
    ) -> TurnResult:
        result = TurnResult()
        self._speech_end = None
        receiver = asyncio.create_task(self._collect(result, on_event))
        if mode == "push_to_talk":
            await self.ws.send(json.dumps({"type": "talk_start"}))
        self._speech_end = await self._stream(pcm, realtime)
        if mode == "push_to_talk":
            await self.ws.send(json.dumps({"type": "talk_end"}))
            self._speech_end = time.monotonic()
        else:
            await self._stream(bytes(int(trailing_silence * RATE) * 2), realtime)
        try:
            await asyncio.wait_for(receiver, timeout)
        except TimeoutError:
            pass
        return result

    async def _stream(self, pcm: bytes, realtime: bool) -> float:
        start = time.monotonic()
        for i, off in enumerate(range(0, len(pcm), FRAME_BYTES)):
            if realtime:
                delay = start + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.ws.send(pcm[off : off + FRAME_BYTES])
        return time.monotonic()

    async def _collect(self, result: TurnResult, on_event: Any) -> None:
        async for msg in self.ws:
            if isinstance(msg, bytes):
                if result.audio_frames == 0 and self._speech_end is not None:
                    result.first_audio_latency = time.monotonic() - self._speech_end
                result.audio_frames += 1
                result.audio += msg
                continue
            data = json.loads(msg)
            result.events.append(data)
            if on_event is not None:
                on_event(data)
            kind = data["type"]
            if kind == "transcript":
                result.transcripts.append(data)
            elif kind == "response_done":
                result.reply = data["text"]
                if not self.tts:
                    return
            elif kind == "interrupted":
                result.interrupted = True
                return
            elif kind == "audio_end":
                return


def _print_event(data: dict[str, Any]) -> None:
    kind = data["type"]
    if kind == "transcript":
        tag = "you   " if data["final"] else "you...."
        print(f"{tag}: {data['text']}", flush=True)
    elif kind == "response_done":
        print(f"agent : {data['text']}", flush=True)
    elif kind == "error":
        print(f"error : {data['code']}: {data['message']}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> int:
    pcm = read_wav(args.wav)
    session_id = args.session or uuid.uuid4().hex[:12]
    token = args.token or os.environ.get("LVA_TOKEN")
    conv = await Conversation.connect(args.url, session_id, args.mode, token=token)
    if conv.learner_token and conv.learner_token != token:
        print(f"learner token (resume with --session {session_id} --token ...):", file=sys.stderr)
        print(conv.learner_token, file=sys.stderr)
    result = await conv.turn(
        pcm, mode=args.mode, realtime=not args.fast, on_event=_print_event, timeout=args.timeout
    )
    if result.first_audio_latency is not None:
        print(f"end of speech -> first reply audio: {result.first_audio_latency * 1000:.0f} ms")
    if result.audio:
        write_wav(args.out, bytes(result.audio), conv.output_rate)
        print(f"reply audio: {args.out} ({len(result.audio) / 2 / conv.output_rate:.1f} s)")
    summary = await conv.close()
    if summary:
        print(f"summary: {summary}")
    return 0 if result.reply else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.client", description=__doc__)
    parser.add_argument("wav", help="mono 16-bit WAV file to speak")
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="server base URL")
    parser.add_argument("--session", help="session id (default: random)")
    parser.add_argument(
        "--token", help="learner credential to resume a session (default: $LVA_TOKEN, or a new one)"
    )
    parser.add_argument("--mode", choices=("continuous", "push_to_talk"), default="continuous")
    parser.add_argument("--out", default="reply.wav", help="where to save the reply audio")
    parser.add_argument("--fast", action="store_true", help="send faster than real time")
    parser.add_argument("--timeout", type=float, default=30.0)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
