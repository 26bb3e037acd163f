"""Voice-to-voice latency on cloud providers under their published timing.

A real server process (this checkout) runs Deepgram live STT -> Anthropic -> Deepgram Aura,
every one pointed at its loopback fake (tests/fakes), and the fakes take as long as the
providers publish (`tests.fakes.latency.CLOUD`: interims every 250 ms of audio, the final
150-300 ms after Finalize, first token 350-800 ms then 10-25 ms a token, first audio
150-300 ms; uniform, seeded). One learner talks push-to-talk in real time: the words, then
`--hold-ms` of silence before releasing the button, as people do.

Per turn: end of speech (the last word's last frame sent) -> the first reply audio frame
received, and the same from the release; the providers' own delays drawn for that turn
on its critical path (the first token, the tokens up to the first clause spoken, the
first audio, and the final transcript when the answer had to wait for it: the server
answers the last interim at the release, held until the final confirms it) and what is
left, ours.

    .venv/bin/python -m loadtest.cloud_turns --turns 40
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

from loadtest.accounting import percentile
from loadtest.turn_eval import Server, replace_section
from server.client import Conversation
from tests.fakes import speechcodec
from tests.fakes.anthropic import FakeAnthropic, tokens
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.latency import CLOUD, Spread

SECTION = "cloud-turns"
MARKERS = (f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->")


@dataclass
class Turn:
    words: int
    #: End of speech / the release -> first reply audio (s).
    from_speech: float
    from_release: float
    #: The providers' own delays on this turn's critical path (s): the first token, the
    #: tokens until the first clause, the first audio; the final if the answer waited for it.
    floor: float
    #: Answered from the last interim at the release (the final said the same words).
    early: bool


def utterances(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = list(speechcodec.VOCAB)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(n)]


def stats_ms(values: list[float]) -> dict[str, int]:
    """p50, p95 and p99 (nearest rank) in ms."""
    return {f"p{q}": round((percentile(values, q) or 0.0) * 1000) for q in (50, 95, 99)}


async def run(args: argparse.Namespace) -> dict[str, object]:
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
    turns: list[Turn] = []
    try:
        await asyncio.to_thread(server.wait_ready)
        url = f"ws://127.0.0.1:{server.port}"
        conv = await Conversation.connect(url, "cloud-turns", mode="push_to_talk")
        hold = speechcodec.silence(args.hold_ms)
        final, first_token, first_audio = dg.finalize_delay, an.first_delay, dg.first_delay
        gap = an.chunk_delay
        assert isinstance(final, Spread) and isinstance(first_token, Spread)
        assert isinstance(first_audio, Spread) and isinstance(gap, Spread)
        for text in utterances(args.turns, args.seed):
            marks = (len(final.drawn), len(first_token.drawn), len(first_audio.drawn))
            gaps_mark, speak_mark = len(gap.drawn), len(dg.requests)
            pcm = speechcodec.encode(text) + hold
            result = await conv.turn(pcm, mode="push_to_talk", realtime=True, timeout=15)
            if result.first_audio_latency is None:
                raise RuntimeError(f"no reply audio for turn {len(turns) + 1}")
            requests = first_token.drawn[marks[1] :]
            # One request: the answer started at the release on the last interim and the
            # final only confirmed it; two: the final was waited for, then answered.
            early = len(requests) == 1
            floor = requests[-1] + first_audio.drawn[marks[2]]
            if early:
                # The tokens the model streamed until the first clause went to speech.
                spoken = [r for r in dg.requests[speak_mark:] if r["path"] == "/v1/speak"]
                pieces = len(tokens(spoken[0]["body"]["text"]))
                floor += sum(gap.drawn[gaps_mark:][: pieces - 1])
            else:
                floor += final.drawn[marks[0]]
            turns.append(
                Turn(
                    words=len(text.split()),
                    from_speech=result.first_audio_latency + args.hold_ms / 1000,
                    from_release=result.first_audio_latency,
                    floor=floor,
                    early=early,
                )
            )
            await asyncio.sleep(args.gap)
        await conv.close()
    finally:
        await asyncio.to_thread(server.stop)
        await dg.stop()
        await an.stop()
    return summarise(turns, args)


def summarise(turns: list[Turn], args: argparse.Namespace) -> dict[str, object]:
    ours = [t.from_release - t.floor for t in turns]
    return {
        "turns": len(turns),
        "answered_at_release": sum(t.early for t in turns),
        "hold_ms": args.hold_ms,
        "seed": args.seed,
        "profile": CLOUD.name,
        "end_of_speech_to_first_audio_ms": stats_ms([t.from_speech for t in turns]),
        "release_to_first_audio_ms": stats_ms([t.from_release for t in turns]),
        "providers_floor_ms": stats_ms([t.floor for t in turns]),
        "ours_ms": stats_ms(ours),
        "every_turn": [asdict(t) for t in turns],
    }


def markdown(summary: dict[str, object], started: float, minutes: float) -> str:
    """The section between the `cloud-turns` markers: a heading, how it ran, the table."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    load = os.getloadavg()[0]
    rows = [
        ("end of speech -> first reply audio", summary["end_of_speech_to_first_audio_ms"]),
        ("release of the button -> first reply audio", summary["release_to_first_audio_ms"]),
        (
            "the providers' own delays on the path (first token, tokens to the first clause, "
            "first audio; the final when waited for)",
            summary["providers_floor_ms"],
        ),
        ("ours: release -> first audio, minus those delays", summary["ours_ms"]),
    ]
    out = [
        "## Cloud providers: voice to voice",
        "",
        "`python -m loadtest.cloud_turns` (tests/fakes with the `cloud` timing of "
        "tests/fakes/latency.py: Deepgram interims every 250 ms of audio and its final "
        "150-300 ms after `Finalize`, Anthropic's first token 350-800 ms then 10-25 ms a "
        "token, Aura's first audio 150-300 ms; uniform, seeded).",
        "",
        f"Run {when}, {summary['turns']} push-to-talk turns, button released "
        f"{summary['hold_ms']} ms after the last word, seed {summary['seed']}, "
        f"{minutes:.1f} min, load average {load:.1f} at the end; "
        f"{summary['answered_at_release']} of {summary['turns']} answered from the last "
        "interim at the release.",
        "",
        "| per turn | p50 | p95 | p99 |",
        "|---|---|---|---|",
    ]
    for label, s in rows:
        assert isinstance(s, dict)
        out.append(f"| {label} | {s['p50']} ms | {s['p95']} ms | {s['p99']} ms |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=40)
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
    summary = asyncio.run(run(args))
    minutes = (time.time() - started) / 60
    brief = {k: v for k, v in summary.items() if k != "every_turn"}
    print(json.dumps(brief, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    section = markdown(summary, started, minutes)
    for name in args.markdown:
        path = Path(name)
        document = path.read_text() if path.exists() else ""
        path.write_text(replace_section(document, section, SECTION))


if __name__ == "__main__":
    main()
