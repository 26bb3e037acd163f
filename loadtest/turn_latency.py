"""End of speech -> first reply audio on a running server, turn after turn.

    .venv/bin/python -m loadtest.turn_latency --url ws://127.0.0.1:8080 --turns 10

Streams a Piper-made utterance at real-time pace per turn (continuous mode: followed by
silence until the endpointer ends the turn; push-to-talk: `talk_end` right after the
speech), measures from the last speech frame sent (or `talk_end`) to the first binary
reply frame received, and prints p50/p95 per mode. Also reads the server's RSS when given
`--pid`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import uuid

from server.client import Conversation

UTTERANCES = (
    "Today I learned that spaced repetition helps me remember new vocabulary.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The French revolution began in seventeen eighty nine.",
    "A prime number has exactly two divisors.",
    "Interest compounds when you earn interest on interest.",
)


def _speech(text: str) -> bytes:
    from tests.speech import silence, synth

    return silence(0.3) + synth(text)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def run_mode(url: str, mode: str, turns: int, clips: list[bytes]) -> list[float]:
    conv = await Conversation.connect(url, f"lat-{mode}-{uuid.uuid4().hex[:6]}", mode=mode)
    latencies: list[float] = []
    for i in range(turns):
        result = await conv.turn(clips[i % len(clips)], mode=mode, trailing_silence=1.2)
        if result.first_audio_latency is not None:
            latencies.append(result.first_audio_latency * 1000)
        await asyncio.sleep(0.3)
    await conv.close()
    return latencies


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS")


async def main_async(args: argparse.Namespace) -> dict:
    clips = [_speech(t) for t in UTTERANCES]
    report: dict = {}
    if args.pid:
        report["rss_mb_before"] = round(rss_mb(args.pid), 1)
    for mode in args.modes:
        lat = await run_mode(args.url, mode, args.turns, clips)
        report[mode] = {
            "turns": len(lat),
            "p50_ms": round(statistics.median(lat)),
            "p95_ms": round(percentile(lat, 95)),
            "min_ms": round(min(lat)),
            "max_ms": round(max(lat)),
        }
    if args.pid:
        report["rss_mb_after"] = round(rss_mb(args.pid), 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8080")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["continuous", "push_to_talk"])
    parser.add_argument("--pid", type=int, help="server PID, to report its RSS")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
