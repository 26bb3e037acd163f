"""An audio flood must not take another learner's turn away.

The attack: push-to-talk sessions that loop `talk_start`, fifteen 64 KiB audio frames
(half a minute of audio each) and `talk_end`, as fast as the socket takes them. Before
audio pacing and fair model scheduling, two such sessions from one client kept both model
threads busy with their backlog, and another learner's push-to-talk turn went from 0.47 s
to 14.5 s (release to final transcript) and 1.3 s to 14.8 s (release to first reply
audio).

Against a real server with the embedded Whisper and Piper: a well-behaved learner's turn,
measured idle and under the flood, interleaved (idle, flooded, idle, flooded, ...) so that
whatever else the machine is doing weighs on both alike; the medians are compared. The
flooders run in a process of their own, so their sending never delays the learner's
client.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pytest

from server.client import FRAME_BYTES, Conversation
from tests.server_process import ServerProcess
from tests.speech import silence, synth

pytestmark = pytest.mark.slow

SCRIPT = "I learned today that sleep helps the brain keep new words."
ROUNDS = 3
FLOOD_FRAME = 64 * 1024
FLOOD_FRAMES = 15


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("flood")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return silence(0.2) + synth(SCRIPT)


@dataclass
class Turn:
    final: float  # release -> final transcript (s)
    first_audio: float  # release -> first reply audio (s)
    text: str


async def ptt_turn(conv: Conversation, pcm: bytes, timeout: float = 60.0) -> Turn:
    """One push-to-talk turn at real-time pace; times from the release (`talk_end`)."""
    ws = conv.ws
    got: dict[str, Any] = {}
    released = asyncio.get_running_loop().create_future()

    async def listen() -> None:
        audio_turn = None
        async for msg in ws:
            now = time.monotonic()
            if isinstance(msg, bytes):
                if audio_turn is not None and audio_turn == got.get("turn_id"):
                    got["first_audio"] = now
                    return
                continue
            event = json.loads(msg)
            if event["type"] == "transcript" and event["final"] and released.done():
                if "turn_id" not in got and event["text"]:
                    got.update(turn_id=event["turn_id"], final=now, text=event["text"])
            elif event["type"] == "audio_start":
                audio_turn = event["turn_id"]

    listener = asyncio.create_task(listen())
    await ws.send(json.dumps({"type": "talk_start"}))
    start = time.monotonic()
    for i, off in enumerate(range(0, len(pcm), FRAME_BYTES)):
        delay = start + i * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(pcm[off : off + FRAME_BYTES])
    await ws.send(json.dumps({"type": "talk_end"}))
    t_release = time.monotonic()
    released.set_result(None)
    async with asyncio.timeout(timeout):
        await listener
    await ws.send(json.dumps({"type": "interrupt"}))  # the next turn starts quiet
    await asyncio.sleep(0.5)
    return Turn(got["final"] - t_release, got["first_audio"] - t_release, got["text"])


class Flooder:
    """Sessions looping talk_start, 15 x 64 KiB, talk_end as fast as they can, in a
    process of their own (their sending must not slow the learner's client down)."""

    def __init__(self, url: str, tag: str, sessions: int = 2) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.sessions = sessions
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._proc = ctx.Process(
            target=_flood_process, args=(url, tag, sessions, self._stop, self._results)
        )
        self.reports: list[dict[str, Any]] = []

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        self._stop.set()
        self.reports = [self._results.get(timeout=60) for _ in range(self.sessions)]
        self._proc.join(30)


def _flood_process(url: str, tag: str, sessions: int, stop: Any, results: Any) -> None:
    async def main() -> None:
        frame = (synth(SCRIPT) * 10)[:FLOOD_FRAME]  # speech: each turn is worth hearing
        await asyncio.gather(*(_flood(url, f"flood-{tag}-{i}", frame) for i in range(sessions)))

    async def _flood(url: str, sid: str, frame: bytes) -> None:
        report: dict[str, Any] = {"errors": [], "turns": 0, "frames": 0, "finals": 0}
        report["open"] = False
        try:
            conv = await Conversation.connect(url, sid, mode="push_to_talk")
            ws = conv.ws

            async def read() -> None:  # a flooder that stops reading is closed (4408)
                async for msg in ws:
                    if isinstance(msg, str):
                        event = json.loads(msg)
                        if event["type"] == "error":
                            report["errors"].append(event["code"])
                        elif event["type"] == "transcript" and event["final"]:
                            report["finals"] += 1
                        elif event["type"] == "pong":
                            return

            reader = asyncio.create_task(read())
            while not stop.is_set():
                await ws.send(json.dumps({"type": "talk_start"}))
                for _ in range(FLOOD_FRAMES):
                    await ws.send(frame)
                    report["frames"] += 1
                    if stop.is_set():
                        break
                await ws.send(json.dumps({"type": "talk_end"}))
                report["turns"] += 1
                await asyncio.sleep(0)
            # Still open and served: a ping is answered.
            await ws.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(30):
                await reader
            report["open"] = True
            await ws.close()
        except Exception as exc:
            report["failure"] = repr(exc)
        finally:
            results.put(report)

    asyncio.run(main())


async def test_an_audio_flood_does_not_delay_another_learners_turn(server, speech) -> None:
    conv = await Conversation.connect(server.ws, "flood-victim", mode="push_to_talk")
    warm = await ptt_turn(conv, speech)  # models loaded, caches warm
    assert "sleep" in warm.text.lower(), warm.text
    idle: list[Turn] = []
    flooded: list[Turn] = []
    flooders: list[Flooder] = []
    for r in range(ROUNDS):
        idle.append(await ptt_turn(conv, speech))
        flooder = Flooder(server.ws, str(r))
        flooders.append(flooder)
        flooder.start()
        await asyncio.sleep(2.0)  # the flood is on: backlogs queued, both threads busy
        try:
            flooded.append(await ptt_turn(conv, speech))
        finally:
            await asyncio.to_thread(flooder.stop)
        await asyncio.sleep(1.0)  # what the flood left running finishes
    await conv.close()

    def median(turns: list[Turn], attr: str) -> float:
        return statistics.median(getattr(t, attr) for t in turns)

    report = {
        attr: (median(idle, attr), median(flooded, attr)) for attr in ("final", "first_audio")
    }
    for attr, label in (("final", "final transcript"), ("first_audio", "first reply audio")):
        quiet = [round(getattr(t, attr), 3) for t in idle]
        loud = [round(getattr(t, attr), 3) for t in flooded]
        print(f"\nrelease -> {label}: idle {quiet}, flooded {loud}")
    reports = [r for f in flooders for r in f.reports]
    sent = [(r["turns"], r["frames"], r["finals"]) for r in reports]
    print(f"flooders (turns, frames, finals): {sent}")

    for r in reports:
        assert r["frames"] > FLOOD_FRAMES, f"the flood did not run: {r}"
        assert r["errors"].count("audio_too_fast") == 1, r  # told once, and only that
        assert r["open"], r
    for t in idle + flooded:
        assert "sleep" in t.text.lower(), t.text
    for attr, (quiet, attacked) in report.items():
        assert attacked <= 1.5 * quiet + 0.3, (
            f"{attr}: idle {quiet:.3f} s, flooded {attacked:.3f} s"
        )
