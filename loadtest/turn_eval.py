"""How well does the agent take turns? Scripted calls over the phone and the browser, measured.

    .venv/bin/python -m loadtest.turn_eval                          # starts its own server
    .venv/bin/python -m loadtest.turn_eval --markdown docs/turn-taking.md
    .venv/bin/python -m loadtest.turn_eval --transport browser --only backchannel
    .venv/bin/python -m loadtest.turn_eval --url ws://127.0.0.1:8080 --auth-token "$TOKEN"

Every scenario of `SCENARIOS` is one call on each transport: a phone call from
`loadtest.phone_sim` (8 kHz mu-law, Twilio's clears and marks) and a browser from
`loadtest.ws_caller_sim` (16 kHz PCM16 over `/ws`, a protocol 1.1 web player). The caller
speaks in real time in one of several voices (`loadtest.voices`: Piper at three speaking
rates, espeak-ng en-us and en-gb), some with white or pink noise at 20, 10 or 5 dB SNR:

* finished sentences and questions: the agent should answer, fast (*answer latency*: end
  of the caller's speech -> first reply audio);
* a pause inside the turn (after "and", "because", "um", a long thinking pause after "um"
  or "so", or mid-sentence with no cue): agent audio arriving in it is a *false cut-in*;
* backchannels during the reply ("mhm", "yeah", "okay", "uh huh", "right", a double
  cough): the agent may yield (duck, pause) but must neither stop (`interrupted`, or a
  phone `clear` after which the reply never comes back: a *false interruption*) nor leave
  its reply unfinished (*reply lost*); the *longest silence* the backchannel leaves in the
  reply is measured on the listener's playback timeline (a ducked stretch plays, quieter);
* interruptions during the reply, with words of intent ("wait", "stop", "hold on") and
  without: the agent must stop within 3 s of the caller starting to talk, else it is a
  *missed interruption*.

For backchannels and interruptions: *audible-yield latency* (caller speech onset -> the
first `duck` / `pause` / `interrupted`, or on the phone the first `clear`) and
*confirmation latency* (onset -> `interrupted`, or on the phone the `clear` that cut the
reply). Onset is when the first frame of that audio was sent (clips are trimmed to the
sound); reply audio times are arrival times.

Prints one line per call and a JSON summary per transport and overall (p50 / p95 of the
timings); `--json FILE` writes every call and the summary, `--markdown FILE` the summary
tables (into the `<!-- turn-eval:start -->` ... `<!-- turn-eval:end -->` section when
FILE has one).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol

from loadtest.accounting import PlayerTimeline, percentile
from loadtest.phone_sim import FRAME_BYTES, FRAME_S, PhoneCall
from loadtest.voices import Colour, coughs, mix_noise, silence, speak
from loadtest.ws_caller_sim import BrowserCall

Kind = Literal["finished", "pause", "backchannel", "interruption"]
Transport = Literal["phone", "browser"]
TRANSPORTS: tuple[Transport, ...] = ("phone", "browser")
RATES: dict[Transport, int] = {"phone": 8000, "browser": 16000}

#: Said over the reply: two short noise bursts instead of words.
COUGH = "<double cough>"
#: Samples in one 20 ms phone frame (one mu-law byte each).
FRAME_SAMPLES = FRAME_BYTES
LEAD = "I learned how vaccines train the immune system."

#: End of speech -> first reply audio, at most.
REPLY_TIMEOUT = 15.0
#: A real interruption must stop the agent this soon after the caller starts talking.
INTERRUPT_DEADLINE = 3.0
#: A backchannel's reply must have played to its end this soon after the backchannel.
PLAYED_TIMEOUT = 25.0
#: After an interruption: time for the server to settle a pause into a cut or a resume.
SETTLE = 1.5
#: A yield this long after the onset is not a reaction to it.
YIELD_WINDOW = 5.0
#: One call, at most (connecting, speaking, waiting for the reply and its end).
CALL_TIMEOUT = 75.0


@dataclass(frozen=True, slots=True)
class Noise:
    """Noise over each of the caller's utterances, `snr_db` below the speech."""

    snr_db: float
    colour: Colour = "white"
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    #: The caller's turn; for a pause, the words before the pause.
    text: str
    #: Pause: the words after it.
    rest: str = ""
    pause_s: float = 0.0
    #: Backchannel / interruption: what is said `after_s` into the reply (COUGH: a cough).
    over: str = ""
    after_s: float = 0.8
    voice: str = "piper"
    noise: Noise | None = None
    #: The cough's noise.
    seed: int = 3

    @property
    def noise_label(self) -> str:
        n = self.noise
        return "" if n is None else f"{n.colour} {n.snr_db:g} dB"


def _finished(name: str, text: str, voice: str = "piper", noise: Noise | None = None) -> Scenario:
    return Scenario(name, "finished", text, voice=voice, noise=noise)


def _paused(
    name: str,
    first: str,
    pause_s: float,
    rest: str,
    voice: str = "piper",
    noise: Noise | None = None,
) -> Scenario:
    return Scenario(name, "pause", first, rest, pause_s, voice=voice, noise=noise)


def _over(
    name: str, kind: Kind, over: str, voice: str = "piper", noise: Noise | None = None
) -> Scenario:
    return Scenario(name, kind, LEAD, over=over, voice=voice, noise=noise)


SCENARIOS: list[Scenario] = [
    # Finished sentences and questions: answer them.
    _finished("finished-vaccines", "I learned how vaccines train the immune system."),
    _finished("finished-question-fast", "What is the difference between weather and climate?",
              "piper-fast"),
    _finished("finished-primes-slow", "A prime number has exactly two divisors.", "piper-slow"),
    _finished("finished-question-espeak-us", "How do plants turn sunlight into sugar?",
              "espeak-us"),
    _finished("finished-tides-espeak-gb", "I learned that the moon controls the tides.",
              "espeak-gb"),
    _finished("finished-ice-snr20", "Why does ice float on water?", noise=Noise(20, seed=11)),
    _finished("finished-repetition-snr10-pink",
              "Today I learned that spaced repetition helps me remember words.",
              noise=Noise(10, "pink", 12)),
    _finished("finished-sky-snr5", "What makes the sky look blue?", noise=Noise(5, seed=13)),
    # Trailing words, then 0.7 s: the turn is not over.
    _paused("trailing-and", "I was reading about black holes and", 0.7,
            "they slowly evaporate."),
    _paused("trailing-because-slow", "I keep forgetting words because", 0.7,
            "I never review them.", "piper-slow"),
    _paused("trailing-um-espeak-us", "The main idea is um", 0.7,
            "that practice beats rereading.", "espeak-us"),
    _paused("trailing-and-snr10-pink", "Volcanoes form at plate boundaries and", 0.7,
            "some of them are under the sea.", noise=Noise(10, "pink", 21)),
    # Long thinking pauses after "um" / "so".
    _paused("thinking-um-1.2", "I think the answer is um", 1.2,
            "gravity pulling on the oceans."),
    _paused("thinking-so-1.5-fast", "I studied the water cycle so", 1.5,
            "now I know where rain comes from.", "piper-fast"),
    _paused("thinking-um-1.4-espeak-gb", "My favourite topic is um", 1.4,
            "how languages change over time.", "espeak-gb"),
    _paused("thinking-so-1.3-snr20", "Bees are important so", 1.3,
            "farmers need them for many crops.", noise=Noise(20, seed=22)),
    # A pause inside the sentence with no cue in the words.
    _paused("mid-sentence", "I learned that the mitochondria", 0.5,
            "make energy for the cell."),
    _paused("mid-sentence-fast", "Compound interest grows", 0.5,
            "faster every single year.", "piper-fast"),
    _paused("mid-sentence-espeak-us", "The heart pumps blood", 0.5,
            "through the whole body.", "espeak-us"),
    # Backchannels (and a cough) during the reply: keep talking, lose nothing.
    _over("backchannel-mhm", "backchannel", "Mhm."),
    _over("backchannel-yeah-slow", "backchannel", "Yeah.", "piper-slow"),
    _over("backchannel-okay-espeak-us", "backchannel", "Okay.", "espeak-us"),
    _over("backchannel-uh-huh", "backchannel", "Uh huh."),
    _over("backchannel-right-espeak-gb", "backchannel", "Right.", "espeak-gb"),
    _over("backchannel-yeah-snr10-pink", "backchannel", "Yeah.", noise=Noise(10, "pink", 31)),
    Scenario("backchannel-double-cough", "backchannel", LEAD, over=COUGH, seed=32),
    # Real interruptions, with words of intent and without: stop within 3 s.
    _over("interrupt-wait", "interruption", "Wait, can you explain that again?"),
    _over("interrupt-stop-fast", "interruption", "Stop, I want to ask something else.",
          "piper-fast"),
    _over("interrupt-hold-on-espeak-us", "interruption",
          "Hold on, I have a different question about that.", "espeak-us"),
    _over("interrupt-no-cue", "interruption",
          "I already know about vaccines, tell me about viruses instead."),
    _over("interrupt-no-cue-slow", "interruption",
          "I already know about vaccines, let's talk about viruses instead.", "piper-slow"),
    _over("interrupt-no-cue-espeak-gb", "interruption",
          "I already know about vaccines, tell me about viruses instead.", "espeak-gb"),
    _over("interrupt-wait-snr5", "interruption", "Wait, can you explain that again?",
          noise=Noise(5, seed=41)),
]  # fmt: skip


# -------------------------------------------------------------------------- audio
@dataclass(frozen=True, slots=True)
class Take:
    """A scenario's audio at one rate."""

    #: The caller's turn (for a pause: the words, the pause, the rest).
    pcm: bytes
    rate: int
    #: Seconds into `pcm` where the words before the pause end (a pause), else its end.
    first_end: float
    over: bytes = b""


def take(sc: Scenario, rate: int) -> Take:
    seed = sc.noise.seed if sc.noise else 0

    def noisy(pcm: bytes, seed: int) -> bytes:
        if sc.noise is None:
            return pcm
        return mix_noise(pcm, rate, sc.noise.snr_db, seed, sc.noise.colour)

    first = speak(sc.text, sc.voice, rate)
    pcm = first + silence(sc.pause_s, rate) + speak(sc.rest, sc.voice, rate) if sc.rest else first
    over = b""
    if sc.over == COUGH:
        over = coughs(rate, sc.seed)
    elif sc.over:
        over = noisy(speak(sc.over, sc.voice, rate), seed + 1)
    return Take(noisy(pcm, seed), rate, len(first) / 2 / rate, over)


# ---------------------------------------------------------------------- transports
class Line(Protocol):
    """One call, as the evaluation sees it, whatever carries it."""

    transport: Transport

    async def say(self, pcm: bytes) -> tuple[float, float]:
        """Speak in real time; (first frame sent, last frame sent)."""
        ...

    def first_audio_after(self, t: float) -> tuple[float, int] | None:
        """(arrival, turn) of the first reply audio after `t` (turn -1: not known yet)."""
        ...

    def first_yield_after(self, t: float) -> tuple[float, str] | None:
        """(arrival, what) of the first sign after `t` that the agent yields to the caller."""
        ...

    def confirmation(self, turn: int) -> float | None:
        """When turn `turn` was cut for good (an interruption), if it was."""
        ...

    def yields(self) -> list[tuple[float, str]]:
        """Every duck / pause / resume / interrupted (phone: clear, or cut) received."""
        ...

    def reply_played(self, turn: int) -> bool:
        """Turn `turn` played to its end, nothing of it lost."""
        ...

    def timeline(self) -> PlayerTimeline:
        """The listener's playback of every reply so far."""
        ...

    def turns(self) -> list[int]: ...


class PhoneLine:
    transport: Transport = "phone"

    def __init__(self, call: PhoneCall) -> None:
        self.call = call

    async def say(self, pcm: bytes) -> tuple[float, float]:
        # The simulator's start is when the audio was queued (up to a frame early); its
        # frames leave on a fixed 20 ms schedule, so the first left this long before the last.
        _, end = await self.call.say(pcm)
        frames = max(1, -(-len(pcm) // 2 // FRAME_SAMPLES))
        return end - (frames - 1) * FRAME_S, end

    def first_audio_after(self, t: float) -> tuple[float, int] | None:
        rx = self.call.rx
        return next(((at, rx.media_turn[i]) for i, (at, _) in enumerate(rx.media) if at > t), None)

    def first_yield_after(self, t: float) -> tuple[float, str] | None:
        return next(((at, "clear") for at in self.call.rx.clears if at > t), None)

    def cuts(self, turn: int) -> list[float]:
        """Clears of `turn` after which none of it came again and its end never played.
        (A pause's `clear`, then the interruption's, are both cuts.)"""
        rx = self.call.rx
        out = []
        for i, t in enumerate(rx.clears):
            n = rx.clear_media[i]
            if not n or rx.media_turn[n - 1] != turn or turn in rx.media_turn[n:]:
                continue
            if any(at > t for at in self._end_acks(turn)):
                continue  # the reply was over (resumed with only its end mark)
            out.append(t)
        return out

    def confirmation(self, turn: int) -> float | None:
        cuts = self.cuts(turn)
        return cuts[-1] if cuts else None

    def yields(self) -> list[tuple[float, str]]:
        rx = self.call.rx
        cut = {t for turn in set(rx.media_turn) for t in self.cuts(turn)}
        return [(t, "cut" if t in cut else "clear") for t in rx.clears]

    def _end_acks(self, turn: int) -> list[float]:
        end = re.compile(rf"^t{turn}-end(\.\d+)?$")
        return [t for t, name in self.call.rx.acks if end.match(name)]

    def reply_played(self, turn: int) -> bool:
        return bool(self._end_acks(turn))

    def timeline(self) -> PlayerTimeline:
        """Twilio's playout: media in order, each after the one before, no lead; a clear
        drops what was not played."""
        rx = self.call.rx
        tl = PlayerTimeline(start_lead=0.0)
        clears = sorted(zip(rx.clear_media, rx.clears, strict=True))
        k = 0
        for i, (at, nbytes) in enumerate(rx.media):
            while k < len(clears) and clears[k][0] <= i:
                tl.clear(clears[k][1])
                k += 1
            tl.push(at, nbytes / 8000, rx.media_turn[i])
        for _, at in clears[k:]:
            tl.clear(at)
        return tl

    def turns(self) -> list[int]:
        return self.call.rx.turns()


class BrowserLine:
    transport: Transport = "browser"

    def __init__(self, call: BrowserCall) -> None:
        self.call = call

    async def say(self, pcm: bytes) -> tuple[float, float]:
        return await self.call.say(pcm)

    def first_audio_after(self, t: float) -> tuple[float, int] | None:
        return self.call.rx.first_audio_after(t)

    def first_yield_after(self, t: float) -> tuple[float, str] | None:
        return self.call.rx.first_yield_after(t)

    def confirmation(self, turn: int) -> float | None:
        return self.call.rx.interrupted.get(turn)

    def yields(self) -> list[tuple[float, str]]:
        kinds = ("duck", "pause", "resume", "interrupted")
        return [(t, m["type"]) for t, m in self.call.rx.of_type(*kinds)]

    def reply_played(self, turn: int) -> bool:
        rx, tl = self.call.rx, self.call.rx.player
        if turn not in rx.audio_end or turn in rx.interrupted or tl.paused:
            return False
        end = tl.end(turn)
        if end is None or time.monotonic() < end:
            return False
        return tl.heard(turn) >= rx.audio_seconds(turn) - 0.005

    def timeline(self) -> PlayerTimeline:
        return self.call.rx.player

    def turns(self) -> list[int]:
        return sorted(self.call.rx.audio_start)


# ------------------------------------------------------------------------ measures
@dataclass
class Outcome:
    scenario: str
    transport: str
    kind: str
    voice: str
    #: Noise mixed into the caller's audio ("pink 10 dB"), if any.
    noise: str = ""
    #: End of the caller's speech -> first reply audio (finished and paused turns), s.
    answer_latency: float | None = None
    false_cut_in: bool = False
    #: Onset of the speech over the reply -> first duck / pause / interrupted (phone:
    #: clear), s; and what it was.
    yield_latency: float | None = None
    yielded_by: str = ""
    #: Onset -> `interrupted` (phone: the clear that cut the reply), s.
    confirm_latency: float | None = None
    missed_interruption: bool = False
    false_interruption: bool = False
    reply_lost: bool = False
    #: Longest stretch of the reply with no agent audio playing, from a backchannel's
    #: onset to the end of the reply, s.
    longest_silence: float | None = None
    #: Seconds of the reply played ducked after the onset (browser).
    ducked: float | None = None
    #: The backchannel was answered as a turn of its own.
    answered_backchannel: bool = False
    #: What the agent did after the onset: "duck@0.10 pause@0.62 resume@1.40" (phone:
    #: clear, or cut for a clear after which the reply never came back).
    trace: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def until(check: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `check` until true (True) or `timeout` s have passed (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def first_reply(line: Line, after: float, out: Outcome) -> tuple[float, int] | None:
    """The first reply audio after `after` with its turn, or None (noted)."""

    def known() -> bool:
        got = line.first_audio_after(after)
        return got is not None and got[1] >= 0

    if not await until(known, REPLY_TIMEOUT):
        out.error = "no reply"
        return None
    return line.first_audio_after(after)


async def run_scenario(sc: Scenario, tk: Take, line: Line) -> Outcome:
    out = Outcome(sc.name, line.transport, sc.kind, sc.voice, sc.noise_label)
    if sc.kind == "finished":
        _, end = await line.say(tk.pcm)
        got = await first_reply(line, end, out)
        if got is not None:
            out.answer_latency = got[0] - end
    elif sc.kind == "pause":
        start, end = await line.say(tk.pcm)
        first_end = start + tk.first_end
        early = line.first_audio_after(first_end)
        if early is not None and early[0] < end:
            out.false_cut_in = True
            out.notes.append(f"agent audio {early[0] - first_end:.2f} s after the first words")
        got = await first_reply(line, end, out)
        if got is not None and not out.false_cut_in:
            out.answer_latency = got[0] - end
    else:
        await _over_reply(sc, tk, line, out)
    return out


async def _over_reply(sc: Scenario, tk: Take, line: Line, out: Outcome) -> None:
    """Say the lead, then `over` `after_s` into the reply, and judge what the agent did."""
    _, end = await line.say(tk.pcm)
    got = await first_reply(line, end, out)
    if got is None:
        return
    first, turn = got
    await sleep_until(first + sc.after_s)
    onset, over_end = await line.say(tk.over)
    if sc.kind == "interruption":
        await sleep_until(max(onset + INTERRUPT_DEADLINE, over_end) + SETTLE)
    else:

        def over() -> bool:  # played, or cut for good (a phone pause looks cut a while)
            cut = line.confirmation(turn)
            return line.reply_played(turn) or (cut is not None and time.monotonic() - cut > 3)

        await until(over, PLAYED_TIMEOUT, 0.05)
        played = line.reply_played(turn)
        out.reply_lost = not played
        await asyncio.sleep(SETTLE)  # time for a reply to the backchannel, if any
    out.trace = " ".join(f"{what}@{t - onset:.2f}" for t, what in line.yields() if t > onset)
    tl = line.timeline()
    reply_end = tl.end(turn)
    if reply_end is not None and reply_end <= onset and line.reply_played(turn):
        out.notes.append("the reply was over before the caller spoke")
    yielded = line.first_yield_after(onset)
    if yielded is not None and yielded[0] - onset <= YIELD_WINDOW:
        out.yield_latency = yielded[0] - onset
        out.yielded_by = yielded[1]
    confirmed = line.confirmation(turn)
    if confirmed is not None and confirmed > onset:
        out.confirm_latency = confirmed - onset
    if sc.kind == "interruption":
        if out.confirm_latency is None or out.confirm_latency > INTERRUPT_DEADLINE:
            out.missed_interruption = True
        return
    out.false_interruption = confirmed is not None
    out.answered_backchannel = any(t > turn for t in line.turns())
    if not out.reply_lost and reply_end is not None:
        out.longest_silence = tl.longest_silence(onset, max(onset, reply_end))
        gaps = tl.silences(onset, reply_end)
        if out.longest_silence >= 0.05:
            a, b = max(gaps, key=lambda g: g[1] - g[0])
            out.notes.append(f"silent from +{a - onset:.2f} to +{b - onset:.2f} s")
        if line.transport == "browser":
            out.ducked = tl.ducked(onset, reply_end)
    elif out.reply_lost:
        out.notes.append(f"reply not played to its end {PLAYED_TIMEOUT:.0f} s on")


# ------------------------------------------------------------------------ the runs
@dataclass(frozen=True, slots=True)
class Target:
    """A server: its base URL (ws://host:port) and the phone webhook's auth token."""

    base: str
    auth_token: str = ""

    @property
    def phone_url(self) -> str:
        return self.base + "/twilio/stream"


def base_url(url: str) -> str:
    """ws://host:port from a base URL (http(s) or ws(s)), or a phone stream URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path.endswith("/twilio/stream"):
        path = path[: -len("/twilio/stream")]
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


async def call(sc: Scenario, tk: Take, transport: Transport, target: Target) -> Outcome:
    started = time.monotonic()
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            if transport == "phone":
                async with PhoneCall(target.phone_url, auth_token=target.auth_token) as phone:
                    await asyncio.sleep(0.3)
                    outcome = await run_scenario(sc, tk, PhoneLine(phone))
            else:
                async with BrowserCall(target.base, rate=tk.rate) as browser:
                    await asyncio.sleep(0.3)
                    outcome = await run_scenario(sc, tk, BrowserLine(browser))
    except TimeoutError:
        outcome = Outcome(sc.name, transport, sc.kind, sc.voice, sc.noise_label, error="timed out")
    except Exception as exc:  # a failed call is a result; the evaluation goes on
        outcome = Outcome(sc.name, transport, sc.kind, sc.voice, sc.noise_label, error=repr(exc))
    outcome.seconds = time.monotonic() - started
    return outcome


def select(only: str, scenarios: Sequence[Scenario] = SCENARIOS) -> list[Scenario]:
    """Scenarios whose name contains any of the comma-separated `only` (all if empty)."""
    parts = [p.strip() for p in only.split(",") if p.strip()]
    return [s for s in scenarios if not parts or any(p in s.name for p in parts)]


async def evaluate(
    target: Target,
    scenarios: Sequence[Scenario],
    transports: Sequence[Transport],
    max_seconds: float,
    out: IO[str] = sys.stdout,
) -> tuple[list[Outcome], int]:
    """Every scenario on every transport, one call at a time (interleaved, so both see
    the same machine); stops starting calls after `max_seconds`. (outcomes, skipped)."""
    takes = {(sc.name, t): take(sc, RATES[t]) for sc in scenarios for t in transports}
    deadline = time.monotonic() + max_seconds
    outcomes: list[Outcome] = []
    skipped = 0
    for sc in scenarios:
        for transport in transports:
            if time.monotonic() > deadline:
                skipped += 1
                continue
            outcome = await call(sc, takes[(sc.name, transport)], transport, target)
            outcomes.append(outcome)
            print(line(outcome), file=out, flush=True)
            await asyncio.sleep(0.5)
    return outcomes, skipped


# ------------------------------------------------------------------------ summary
def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def timing(values: Sequence[float | None]) -> dict[str, int | None]:
    """n, p50 and p95 (nearest rank) and max of the values, in ms."""
    got = [v for v in values if v is not None]
    return {
        "n": len(got),
        "p50": ms(percentile(got, 50)),
        "p95": ms(percentile(got, 95)),
        "max": ms(max(got)) if got else None,
    }


def _count(pool: Sequence[Outcome], flag: str) -> dict[str, object]:
    """How many of `pool` have `flag` (a timing: have one), as k/n and a rate."""
    k = sum(getattr(o, flag) not in (None, False) for o in pool)
    n = len(pool)
    return {"k": k, "n": n, "text": f"{k}/{n}", "rate": round(k / n, 3) if n else None}


def summarise(outcomes: Sequence[Outcome]) -> dict[str, object]:
    """The measures of a set of calls (errors are counted, and left out of the rest)."""
    ok = [o for o in outcomes if not o.error]

    def of(*kinds: str) -> list[Outcome]:
        return [o for o in ok if o.kind in kinds]

    backchannels, interruptions = of("backchannel"), of("interruption")
    return {
        "calls": len(outcomes),
        "errors": len(outcomes) - len(ok),
        "false_cut_ins": _count(of("pause"), "false_cut_in"),
        "false_interruptions": _count(backchannels, "false_interruption"),
        "missed_interruptions": _count(interruptions, "missed_interruption"),
        "replies_lost": _count(backchannels, "reply_lost"),
        "backchannels_answered": _count(backchannels, "answered_backchannel"),
        "yielded": _count(backchannels + interruptions, "yield_latency"),
        "answer_latency_ms": timing([o.answer_latency for o in of("finished", "pause")]),
        "yield_latency_interruption_ms": timing([o.yield_latency for o in interruptions]),
        "yield_latency_backchannel_ms": timing([o.yield_latency for o in backchannels]),
        "confirmation_latency_ms": timing([o.confirm_latency for o in interruptions]),
        "backchannel_longest_silence_ms": timing([o.longest_silence for o in backchannels]),
    }


def summary(outcomes: Sequence[Outcome]) -> dict[str, dict[str, object]]:
    """Per transport (those that ran) and overall."""
    groups: dict[str, dict[str, object]] = {}
    for transport in TRANSPORTS:
        mine = [o for o in outcomes if o.transport == transport]
        if mine:
            groups[transport] = summarise(mine)
    groups["overall"] = summarise(outcomes)
    return groups


def summary_json(groups: dict[str, dict[str, object]]) -> str:
    """The summary as JSON, one measure a line."""
    blocks = []
    for name, measures in groups.items():
        rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in measures.items())
        blocks.append(f"  {json.dumps(name)}: {{\n{rows}\n  }}")
    return "{\n" + ",\n".join(blocks) + "\n}"


def line(o: Outcome) -> str:
    """One call, one line."""
    flags = [
        f
        for f in ("false_cut_in", "false_interruption", "missed_interruption", "reply_lost",
                  "answered_backchannel")
        if getattr(o, f)
    ]  # fmt: skip
    parts = [f"{o.scenario:30} {o.transport:7} {o.kind:12}"]
    if o.error:
        parts.append(f"ERROR {o.error}")
    for label, value in (
        ("answer", o.answer_latency),
        ("yield", o.yield_latency),
        ("confirm", o.confirm_latency),
        ("silence", o.longest_silence),
        ("ducked", o.ducked),
    ):
        if value is not None:
            parts.append(f"{label} {value * 1000:.0f} ms")
    if o.yielded_by:
        parts.append(f"({o.yielded_by})")
    if not o.error:
        parts.append(" ".join(flags) or "ok")
    if o.trace:
        parts.append(f"[{o.trace}]")
    if o.notes:
        parts.append("; ".join(o.notes))
    return " ".join(parts)


# ----------------------------------------------------------------------- markdown
START_MARKER = "<!-- turn-eval:start -->"
END_MARKER = "<!-- turn-eval:end -->"

_ROWS: list[tuple[str, str]] = [
    ("false cut-ins (agent audio in a pause inside the caller's turn)", "false_cut_ins"),
    ("false interruptions (a backchannel or cough cut the reply)", "false_interruptions"),
    ("missed interruptions (not cut within 3 s)", "missed_interruptions"),
    ("replies lost after a backchannel (not played to the end)", "replies_lost"),
    ("backchannels answered as a turn", "backchannels_answered"),
    ("calls where the agent audibly yielded (backchannels + interruptions)", "yielded"),
    ("answer latency: end of speech -> first reply audio", "answer_latency_ms"),
    ("audible yield, interruptions: onset -> duck/pause/clear", "yield_latency_interruption_ms"),
    ("audible yield, backchannels: onset -> duck/pause/clear", "yield_latency_backchannel_ms"),
    ("confirmation: onset -> `interrupted` / the cutting clear", "confirmation_latency_ms"),
    ("longest silence a backchannel leaves in the reply", "backchannel_longest_silence_ms"),
]


def _cell(value: object) -> str:
    if isinstance(value, dict) and "text" in value:
        rate = value["rate"]
        return str(value["text"]) + ("" if rate is None else f" ({rate * 100:.0f}%)")
    if isinstance(value, dict) and "p50" in value:
        if not value["n"]:
            return "-"
        return f"{value['p50']} / {value['p95']} ms (n={value['n']})"
    return "-" if value is None else str(value)


def markdown(
    groups: dict[str, dict[str, object]], outcomes: Sequence[Outcome], header: str = ""
) -> str:
    """The summary table (one column per transport, and overall) and the calls."""
    names = list(groups)
    lines = [header, ""] if header else []
    lines += [
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key in _ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(groups[g][key]) for g in names) + " |")
    lines.append(
        "| calls (failed: no reply or timed out) | "
        + " | ".join(f"{groups[g]['calls']} ({groups[g]['errors']})" for g in names)
        + " |"
    )
    lines += [
        "",
        "Timings are p50 / p95 (nearest rank).",
        "",
        "<details><summary>Every call</summary>",
        "",
        "| call | transport | voice | noise | answer | yield | confirm | silence | result "
        "| the agent, from the onset |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        flags = [
            f.replace("_", " ")
            for f in ("false_cut_in", "false_interruption", "missed_interruption", "reply_lost",
                      "answered_backchannel")
            if getattr(o, f)
        ]  # fmt: skip
        result = o.error or ", ".join(flags) or "ok"
        cells = [
            o.scenario,
            o.transport,
            o.voice,
            o.noise or "-",
            *(
                "-" if v is None else f"{v * 1000:.0f} ms"
                for v in (o.answer_latency, o.yield_latency, o.confirm_latency, o.longest_silence)
            ),
            result,
            o.trace or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def replace_section(document: str, section: str, name: str = "turn-eval") -> str:
    """`document` with what is between the `name` markers (`<!-- turn-eval:start -->`...)
    replaced by `section` (the markers and the section appended when it has none)."""
    first, last = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{first}\n{section.rstrip()}\n{last}"
    start, end = document.find(first), document.find(last)
    if start < 0 or end < start:
        return document.rstrip("\n") + ("\n\n" if document.strip() else "") + block + "\n"
    return document[:start] + block + document[end + len(last) :]


def write_markdown(path: Path, section: str, name: str = "turn-eval") -> None:
    """Put `section` between the `name` markers of the document at `path`."""
    document = path.read_text() if path.exists() else ""
    path.write_text(replace_section(document, section, name))


def run_header(started: float, minutes: float, load: tuple[float, float], skipped: int) -> str:
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    text = (
        f"Run {when} UTC" + (f" at commit `{commit}`" if commit else "")
        + f", {minutes:.1f} min, {os.cpu_count()} CPUs, load average {load[0]:.1f} at the"
        f" start and {load[1]:.1f} at the end."
    )  # fmt: skip
    if skipped:
        text += f" {skipped} calls were not run (time limit)."
    return text


# ------------------------------------------------------------------- own server
#: The checkout this file belongs to: its server is the one evaluated.
ROOT = Path(__file__).resolve().parents[1]


class Server:
    """`python -m server` of this checkout on a free port with a throw-away database,
    signatures off. (The server runs in a temporary directory; PYTHONPATH points at this
    checkout, else an installed copy of the package elsewhere would be imported.)"""

    def __init__(self, log_path: str = "", env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory(prefix="turn-eval-")
        env = {
            **os.environ,
            "DATABASE_PATH": os.path.join(self.dir.name, "captures.db"),
            "TWILIO_VALIDATE_SIGNATURE": "false",
            "LOG_LEVEL": "info" if log_path else "warning",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
            **(env or {}),
        }
        self.log = open(log_path, "w") if log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.dir.name,
            env=env,
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
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
        if self.log is not None:
            self.log.close()
        self.dir.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="", help="a running server (ws://host:port); default: own")
    p.add_argument("--auth-token", default="", help="its TWILIO_AUTH_TOKEN, to sign calls")
    p.add_argument("--transport", choices=("phone", "browser", "both"), default="both")
    p.add_argument("--only", default="", help="scenarios whose name contains this (a,b,...)")
    p.add_argument("--json", default="", help="write every call and the summary to this file")
    p.add_argument("--markdown", default="", help="write the summary tables into this file")
    p.add_argument("--max-minutes", type=float, default=45.0, help="start no call after this")
    p.add_argument("--server-log", default="", help="own server: its log (info) to this file")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args()
    scenarios = select(args.only)
    transports: tuple[Transport, ...] = (
        TRANSPORTS if args.transport == "both" else (args.transport,)  # type: ignore[assignment]
    )
    if args.list or not scenarios:
        for sc in scenarios:
            print(f"{sc.name:30} {sc.kind:12} {sc.voice:10} "
                  + sc.noise_label)  # fmt: skip
        if not scenarios:
            sys.exit(f"no scenario matches {args.only!r}")
        return
    started, load0 = time.time(), os.getloadavg()[0]
    server = None
    if args.url:
        target = Target(base_url(args.url), args.auth_token)
    else:
        server = Server(args.server_log)
        server.wait_ready()
        target = Target(f"ws://127.0.0.1:{server.port}")
    try:
        outcomes, skipped = asyncio.run(
            evaluate(target, scenarios, transports, args.max_minutes * 60)
        )
    finally:
        if server is not None:
            server.stop()
    groups = summary(outcomes)
    print(summary_json(groups))
    minutes = (time.time() - started) / 60
    if args.json:
        with open(args.json, "w") as f:
            doc = {"summary": groups, "skipped": skipped, "outcomes": [asdict(o) for o in outcomes]}
            json.dump(doc, f, indent=2)
    if args.markdown:
        header = run_header(started, minutes, (load0, os.getloadavg()[0]), skipped)
        write_markdown(Path(args.markdown), markdown(groups, outcomes, header))


if __name__ == "__main__":
    main()
