"""What packet loss costs recognition, with the WebRTC transport's concealment and without.

    python -m loadtest.conceal_wer --patterns 100 --loss 0.05 --loss 0.10 \
        --markdown docs/benchmarks.md

One sentence of the bundled Piper voice (the WebRTC loss test's, 39 words) is encoded as
20 ms Opus packets by aiortc's encoder, a share of the packets is dropped at random
(`--patterns` different seeded patterns per loss rate), the rest are decoded the way aiortc
decodes them (libopus through PyAV), each gap is handled one of three ways, and the whole
utterance goes to the server's Whisper (the bundled tiny model, int8, short window):

* `conceal`: `audio.conceal.Concealment`, what the server does;
* `silence`: the gap filled with zeros;
* `splice`: nothing filled, the frames either side joined.

It reports each way's word error rate over the patterns (mean, p95, max), the share of
patterns more than 10 points above the lossless transcript (the WebRTC loss test's bound),
and the cost of concealing one lost frame. Offline and deterministic for a given machine:
no server, no network; the same patterns for every way.
"""

from __future__ import annotations

import argparse
import fractions
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audio.conceal import Concealment
from audio.resample import resample
from loadtest.accounting import percentile

SECTION = "conceal"
MARKERS = (f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->")
SCRIPT = (
    "Today I learned that honey never goes bad because it has very little water, "
    "and that bees make it from the nectar of flowers, which they carry back to the hive "
    "and dry with their wings for many days."
)
RATE = 48000
FRAME = 960
WAYS = ("conceal", "silence", "splice")


def opus_packets(pcm48k: bytes) -> list[tuple[int, bytes]]:
    """(RTP timestamp, Opus payload) of each 20 ms frame, as aiortc's sender makes them."""
    from aiortc.codecs.opus import OpusEncoder
    from av import AudioFrame

    encoder = OpusEncoder()
    packets = []
    for pts in range(0, len(pcm48k) // 2 - FRAME + 1, FRAME):
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm48k[pts * 2 : (pts + FRAME) * 2])
        frame.sample_rate, frame.pts = RATE, pts
        frame.time_base = fractions.Fraction(1, RATE)
        payloads, _ = encoder.encode(frame)
        packets += [(pts, payload) for payload in payloads]
    return packets


def received(packets: list[tuple[int, bytes]], lost: set[int], way: str) -> bytes:
    """What the session hears at 16 kHz when the packets in `lost` never arrive."""
    from av import CodecContext
    from av.packet import Packet

    from server.transports.webrtc_media import mono_s16

    decoder = CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "stereo", RATE
    conceal = Concealment(RATE)
    out: list[bytes] = []
    gap = 0
    for i, (pts, payload) in enumerate(packets):
        if i in lost:
            gap += 1
            continue
        packet = Packet(payload)
        packet.pts, packet.time_base = pts, fractions.Fraction(1, RATE)
        for frame in decoder.decode(packet):
            pcm = mono_s16(frame)
            if way == "conceal":
                out += conceal.before(frame.pts, frame.samples, pcm)
            elif way == "silence":
                out += [bytes(len(pcm))] * gap
            out.append(pcm)
            gap = 0
    return resample(b"".join(out), RATE, 16000)


def _pct(values: list[float], q: float) -> float:
    found = percentile(values, q)
    assert found is not None, "no values"
    return found


def conceal_cost_us(repeats: int = 2000) -> tuple[float, float]:
    """Median and p99 microseconds to fill one lost frame between two voiced frames."""
    t = np.arange(3 * FRAME)
    voice = (6000 * np.sin(2 * np.pi * 140 * t / RATE)).astype("<i2")
    first, second = voice[:FRAME].tobytes(), voice[2 * FRAME :].tobytes()
    costs = []
    for _ in range(repeats):
        conceal = Concealment(RATE)
        conceal.before(0, FRAME, first)
        started = time.perf_counter_ns()
        conceal.before(2 * FRAME, FRAME, second)
        costs.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(costs), _pct(costs, 99)


def run(
    losses: list[float], patterns: int, transcribe: Callable[[bytes], str]
) -> tuple[float, dict[float, dict[str, list[float]]]]:
    from tests.speech import silence, synth, wer

    speech = resample(silence(0.4) + synth(SCRIPT) + silence(1.0), 16000, RATE)
    packets = opus_packets(speech)
    lossless = wer(SCRIPT, transcribe(received(packets, set(), "splice")))
    rates: dict[float, dict[str, list[float]]] = {}
    for loss in losses:
        rates[loss] = {way: [] for way in WAYS}
        for seed in range(patterns):
            rnd = random.Random(seed)
            lost = {i for i in range(len(packets)) if rnd.random() < loss}
            for way in WAYS:
                rates[loss][way].append(wer(SCRIPT, transcribe(received(packets, lost, way))))
        print(f"loss {loss:.0%}: done", file=sys.stderr)
    return lossless, rates


def section(
    lossless: float,
    rates: dict[float, dict[str, list[float]]],
    patterns: int,
    cost: tuple[float, float],
    minutes: float,
) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        "## Packet loss and recognition (WebRTC audio in)",
        "",
        f"Generated by `python -m loadtest.conceal_wer --patterns {patterns}` ({when}, "
        f"{minutes:.1f} min). A 39-word sentence of the bundled Piper voice as Opus "
        "packets (aiortc's encoder), dropped at random, decoded as aiortc decodes, each gap "
        "handled three ways, the whole utterance transcribed by the bundled Whisper tiny "
        f"(int8). {patterns} loss patterns per rate, the same for each way. Lossless word "
        f"error rate: {lossless:.3f}. *Over bound*: patterns more than 10 points above the "
        "lossless transcript (the bound of `tests/integration/test_webrtc.py`'s loss test).",
        "",
        "| loss | gap | WER mean | p95 | max | over bound |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for loss, ways in rates.items():
        for way, values in ways.items():
            over = sum(v > lossless + 0.10 + 1e-9 for v in values)
            lines.append(
                f"| {loss:.0%} | {way} | {statistics.mean(values):.3f} | "
                f"{_pct(values, 95):.3f} | {max(values):.3f} | {over}/{len(values)} |"
            )
    lines += [
        "",
        f"Filling one lost 20 ms frame between two voiced ones costs {cost[0]:.0f} us median, "
        f"{cost[1]:.0f} us p99 (one core), the pitch search both ways included: at 5% loss "
        f"that is about {cost[0] * 2.5 / 1000:.2f} ms of CPU per second of a session's audio.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", type=int, default=100, help="loss patterns per rate")
    parser.add_argument(
        "--loss", type=float, action="append", help="share of packets lost (repeatable)"
    )
    parser.add_argument("--markdown", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    if args.patterns < 1:
        parser.error("--patterns must be at least 1")
    args.loss = args.loss or [0.05, 0.10]
    if not all(0.0 < loss < 1.0 for loss in args.loss):
        parser.error("--loss must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from loadtest.turn_eval import write_markdown
    from pipelines.stt.whisper import WhisperModelHolder

    args = parse_args(argv)
    started = time.monotonic()
    whisper = WhisperModelHolder()
    lossless, rates = run(args.loss, args.patterns, whisper.transcribe)
    text = section(
        lossless, rates, args.patterns, conceal_cost_us(), (time.monotonic() - started) / 60
    )
    print(text)
    for path in args.markdown:
        write_markdown(path, text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
