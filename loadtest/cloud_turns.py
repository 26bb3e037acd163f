"""Voice-to-voice latency on cloud providers under their published timing.

A real server process (this checkout) runs Deepgram live STT -> Anthropic -> Deepgram Aura,
every one pointed at its loopback fake (tests/fakes), and the fakes take as long as the
providers publish (`tests.fakes.latency.CLOUD`: interims every 250 ms of audio, the final
150-300 ms after Finalize, first token 350-800 ms then 10-25 ms a token, first audio
150-300 ms; uniform, seeded). One learner talks in real time:

- push-to-talk: the words, then `--hold-ms` of silence before releasing the button, as
  people do. The server answers the last interim at the release, held until the final
  confirms it.
- hands-free: the words, then silence. When the pause begins, the server answers the
  latest interim, held; its turn rules end the turn and the final confirms the reply.

Per turn: end of speech (the last word's last frame sent) -> the first reply audio frame
received (and from the release); the providers' own delays drawn for that turn on its
critical path (the first token, the tokens up to the first clause spoken, the first
audio, and the final transcript when the answer had to wait for it) and what is left.

    .venv/bin/python -m loadtest.cloud_turns --turns 40                # both modes
    .venv/bin/python -m loadtest.cloud_turns --turns 40 --mode hands_free
    .venv/bin/python -m loadtest.cloud_turns --turns 40 --markdown docs/turn-taking.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from loadtest.accounting import percentile
from loadtest.turn_eval import Server, write_markdown
from server.client import Conversation
from tests.fakes import speechcodec
from tests.fakes.anthropic import FakeAnthropic, tokens
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.latency import CLOUD, Spread

#: The section of the documents, and the start of its sessions' names.
SECTION = "cloud-turns"
PTT = "push_to_talk"
MARKERS = (f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->")


@dataclass
class Turn:
    words: int
    #: End of speech / the release (push-to-talk) -> first reply audio (s).
    from_speech: float
    from_release: float | None
    #: The providers' own delays on this turn's critical path (s): the first token, the
    #: tokens until the first clause, the first audio; the final if the answer waited for it.
    #: None where it cannot be told (hands-free, when a held reply was replaced).
    floor: float | None
    #: Answered with one model request, held from an interim before the final (at the
    #: release, or when the pause began) and released by it.
    early: bool


def utterances(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = list(speechcodec.VOCAB)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(n)]


def stats_ms(values: list[float]) -> dict[str, int]:
    """p50, p95 and p99 (nearest rank) in ms."""
    return {f"p{q}": round((percentile(values, q) or 0.0) * 1000) for q in (50, 95, 99)}


#: The modes and their names in the report.
MODES = {PTT: "push-to-talk", "hands_free": "hands-free"}


def floor_at_speech_end_ms() -> int:
    """The median of the first token plus the first audio in this profile: no answer that
    starts once the last word is known can have a lower p50, whatever the server does."""
    return round((sum(CLOUD.llm_first) + sum(CLOUD.tts_first)) / 2 * 1000)


async def run(args: argparse.Namespace) -> dict[str, list[Turn]]:
    dg, an = FakeDeepgram(), FakeAnthropic()
    await dg.start()
    await an.start()
    CLOUD.apply(deepgram=dg, llm=an, tts=dg, seed=args.seed)
    env = {
        "STT_PROVIDERS": "deepgram",
        "LLM_PROVIDERS": "anthropic",
        "TTS_PROVIDERS": "deepgram",
        "DEEPGRAM_API_KEY": dg.api_key,
        "DEEPGRAM_BASE_URL": dg.base_url,
        "ANTHROPIC_API_KEY": an.api_key,
        "ANTHROPIC_BASE_URL": an.base_url,
    }
    server = Server(args.server_log, env)
    modes = tuple(MODES) if args.mode == "both" else (args.mode,)
    try:
        await asyncio.to_thread(server.wait_ready)
        url = f"ws://127.0.0.1:{server.port}"
        return {mode: await talk(url, mode, dg, an, args) for mode in modes}
    finally:
        await asyncio.to_thread(server.stop)
        await dg.stop()
        await an.stop()


async def talk(
    url: str, mode: str, dg: FakeDeepgram, an: FakeAnthropic, args: argparse.Namespace
) -> list[Turn]:
    """`args.turns` turns in one mode."""
    turns: list[Turn] = []
    hands_free = mode != PTT
    conv = None if hands_free else await Conversation.connect(url, f"{SECTION}-ptt", mode=PTT)
    hold = speechcodec.silence(args.hold_ms)
    final, first_token, first_audio = dg.finalize_delay, an.first_delay, dg.first_delay
    gap = an.chunk_delay
    assert isinstance(final, Spread) and isinstance(first_token, Spread)
    assert isinstance(first_audio, Spread) and isinstance(gap, Spread)
    for text in utterances(args.turns, args.seed):  # the same words in both modes
        marks = (len(final.drawn), len(first_token.drawn), len(first_audio.drawn))
        gaps_mark, speak_mark = len(gap.drawn), len(dg.requests)
        if hands_free:
            # A session per turn: the next turn never meets the last reply still playing.
            name = f"{SECTION}-hands-free-{len(turns)}"
            other = await Conversation.connect(url, name, mode="continuous")
            result = await other.turn(
                speechcodec.encode(text), realtime=True, trailing_silence=2.0, timeout=15
            )
            await other.close()
        else:
            assert conv is not None
            pcm = speechcodec.encode(text) + hold
            result = await conv.turn(pcm, mode=PTT, realtime=True, timeout=15)
        latency = result.first_audio_latency
        if latency is None:
            raise RuntimeError(f"no reply audio for {mode} turn {len(turns) + 1}")
        requests = first_token.drawn[marks[1] :]
        # One request: the answer started on an interim before the final and the final
        # only confirmed it; two: the held reply was dropped and another one answered.
        early = len(requests) == 1
        floor: float | None = requests[-1] + first_audio.drawn[marks[2]]
        if early:
            # The tokens the model streamed until the first clause went to speech.
            spoken = [r for r in dg.requests[speak_mark:] if r["path"] == "/v1/speak"]
            pieces = len(tokens(spoken[0]["body"]["text"]))
            floor += sum(gap.drawn[gaps_mark:][: pieces - 1])
        elif hands_free:
            floor = None  # which request's delays were on the path is not known
        else:
            floor += final.drawn[marks[0]]
        turns.append(
            Turn(
                words=len(text.split()),
                from_speech=latency if hands_free else latency + args.hold_ms / 1000,
                from_release=None if hands_free else latency,
                floor=floor,
                early=early,
            )
        )
        await asyncio.sleep(args.gap)
    if conv is not None:
        await conv.close()
    return turns


def summarise(turns: list[Turn]) -> dict[str, object]:
    floors = [(t, t.floor) for t in turns if t.floor is not None]
    # Push-to-talk: from the release; hands-free: from the end of speech.
    rest = [(t.from_speech if t.from_release is None else t.from_release) - f for t, f in floors]
    released = [t.from_release for t in turns if t.from_release is not None]
    return {
        "turns": len(turns),
        "answered_early": sum(t.early for t in turns),
        "end_of_speech_to_first_audio_ms": stats_ms([t.from_speech for t in turns]),
        "release_to_first_audio_ms": stats_ms(released) if released else None,
        "providers_floor_ms": stats_ms([f for _, f in floors]),
        "rest_ms": stats_ms(rest),
        "every_turn": [asdict(t) for t in turns],
    }


def cell(s: object) -> str:
    if not isinstance(s, dict):
        return "-"
    return f"{s['p50']} / {s['p95']} / {s['p99']} ms"


def markdown(summary: dict[str, object], started: float, minutes: float) -> str:
    """The section between the `cloud-turns` markers: a heading, how it ran, the table."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    load = os.getloadavg()[0]
    per = {m: cast(dict[str, object], summary[m]) for m in MODES if m in summary}
    rows = [
        ("end of speech -> first reply audio", "end_of_speech_to_first_audio_ms"),
        ("release of the button -> first reply audio", "release_to_first_audio_ms"),
        (
            "the providers' own delays on the path (first token, tokens to the first "
            "clause, first audio; push-to-talk: the final when waited for), turns with one "
            "model request",
            "providers_floor_ms",
        ),
        (
            "the rest, same turns: push-to-talk, ours from the release; hands-free, from "
            "the end of speech: the pause before the reply is started, the end of the turn "
            "and the final when the reply was ready before them, and ours",
            "rest_ms",
        ),
    ]
    early = ", ".join(f"{MODES[m]} {per[m]['answered_early']} of {per[m]['turns']}" for m in per)
    out = [
        "## Cloud providers: voice to voice",
        "",
        "`python -m loadtest.cloud_turns` (tests/fakes with the `cloud` timing of "
        "tests/fakes/latency.py: Deepgram interims every 250 ms of audio and its final "
        "150-300 ms after `Finalize`, Anthropic's first token 350-800 ms then 10-25 ms a "
        "token, Aura's first audio 150-300 ms; uniform, seeded).",
        "",
        f"Run {when}, {summary['turns']} turns per mode, push-to-talk released "
        f"{summary['hold_ms']} ms after the last word, hands-free one session per turn, "
        f"seed {summary['seed']}, {minutes:.1f} min, load average {load:.1f} at the end. "
        f"Turns answered with one model request (the reply held from an interim, no held "
        f"reply thrown away): {early}.",
        "",
        f"An answer started only once the last word is known cannot do better than "
        f"{summary['floor_at_speech_end_ms']} ms at p50 in this profile: the median of the "
        "first token plus the first audio.",
        "",
        "| per turn, p50 / p95 / p99 | " + " | ".join(MODES[m] for m in per) + " |",
        "|---|" + "---|" * len(per),
    ]
    for label, key in rows:
        out.append(f"| {label} | " + " | ".join(cell(per[m][key]) for m in per) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=40, help="turns per mode")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--hold-ms", type=int, default=200, help="silence before the release")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gap", type=float, default=0.3, help="seconds between turns")
    p.add_argument("--json", default="", help="write the summary and every turn here")
    p.add_argument(
        "--markdown", action="append", default=[], help="write its section into this file"
    )
    p.add_argument("--server-log", default="", help="the server's log (info) to this file")
    args = p.parse_args()
    if not 1 <= args.turns <= 1000:
        p.error("--turns must be 1..1000")
    started = time.time()
    by_mode = asyncio.run(run(args))
    minutes = (time.time() - started) / 60
    summary: dict[str, object] = {
        "turns": args.turns,
        "hold_ms": args.hold_ms,
        "seed": args.seed,
        "profile": CLOUD.name,
        "floor_at_speech_end_ms": floor_at_speech_end_ms(),
        **{mode: summarise(turns) for mode, turns in by_mode.items()},
    }
    brief = {
        k: {kk: vv for kk, vv in v.items() if kk != "every_turn"} if isinstance(v, dict) else v
        for k, v in summary.items()
    }
    print(json.dumps(brief, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    section = markdown(summary, started, minutes)
    for name in args.markdown:
        write_markdown(Path(name), section, SECTION)


if __name__ == "__main__":
    main()
