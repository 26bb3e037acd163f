"""Micro-benchmark of the per-frame audio hot path, to size sessions per core.

Run: ``python -m loadtest.bench_audio`` (or ``python loadtest/bench_audio.py``). Prints the
median (and p99) cost in microseconds of the work done for each 20 ms frame:

* browser path: ``Reframer.push`` + ``Endpointer.process`` on 16 kHz PCM16 frames;
* phone path: ``mulaw_decode`` + ``StreamResampler(8000, 16000).process`` of one 20 ms frame.

A 20 ms frame budget is 20 000 us of real time, so 1 / (cost x 50) of a core is one session.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from audio import Endpointer, Reframer, StreamResampler, mulaw_decode, mulaw_encode


def _speechlike(seconds: float, rate: int) -> bytes:
    """Alternating 1 s of a 150 Hz sawtooth and 1 s of faint noise, as PCM16."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voiced = (2.0 * ((t * 150.0) % 1.0) - 1.0) * 0.3 * 32767
    gate = (np.floor(t) % 2 == 0).astype(np.float64)
    x = voiced * gate + rng.normal(0.0, 20.0, t.size)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _time_each(frames: list[bytes], step: Callable[[bytes, int], object]) -> list[float]:
    costs: list[float] = []
    clock = time.perf_counter_ns
    for i, frame in enumerate(frames):
        t0 = clock()
        step(frame, i)
        costs.append((clock() - t0) / 1000.0)
    return costs


def _report(name: str, costs: list[float]) -> None:
    costs_sorted = sorted(costs)
    p99 = costs_sorted[int(0.99 * (len(costs_sorted) - 1))]
    median = statistics.median(costs)
    sessions = 20_000.0 / median if median else float("inf")
    print(
        f"{name:<44} median {median:7.2f} us   p99 {p99:7.2f} us   "
        f"(~{sessions:,.0f} sessions/core at 50 frames/s)"
    )


def bench_browser(frames_count: int) -> list[float]:
    pcm = _speechlike(frames_count * 0.02, 16000)
    frames = [pcm[i : i + 640] for i in range(0, len(pcm) - 639, 640)]
    reframer = Reframer(16000, 20)
    endpointer = Endpointer()

    def step(chunk: bytes, i: int) -> None:
        for frame in reframer.push(chunk):
            endpointer.process(frame, i * 0.02)
            if endpointer.in_speech:
                endpointer.take_preroll()

    return _time_each(frames, step)


def bench_browser_odd_chunks(frames_count: int) -> list[float]:
    """Same, fed 128-sample chunks (a Web Audio worklet's quantum) so the carry buffer is used.

    Five 8 ms chunks make 40 ms = two frames; each group is timed and halved, so the figure
    is per 20 ms of audio like the others.
    """
    pcm = _speechlike(frames_count * 0.02, 16000)
    group = 5 * 256
    groups = [pcm[i : i + group] for i in range(0, len(pcm) - group + 1, group)]
    reframer = Reframer(16000, 20)
    endpointer = Endpointer()

    def step(block: bytes, i: int) -> None:
        for k in range(0, group, 256):
            for frame in reframer.push(block[k : k + 256]):
                endpointer.process(frame, i * 0.04)

    return [c / 2 for c in _time_each(groups, step)]


def bench_reframer(frames_count: int) -> list[float]:
    """Reframer alone on exact 20 ms frames (the fast path)."""
    frames = [bytes(640)] * frames_count
    reframer = Reframer(16000, 20)
    return _time_each(frames, lambda frame, _i: reframer.push(frame))


def bench_phone(frames_count: int) -> list[float]:
    pcm8k = _speechlike(frames_count * 0.02, 8000)
    line = mulaw_encode(pcm8k)
    frames = [line[i : i + 160] for i in range(0, len(line) - 159, 160)]
    resampler = StreamResampler(8000, 16000)

    def step(frame: bytes, _i: int) -> None:
        resampler.process(mulaw_decode(frame))

    return _time_each(frames, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="frames per benchmark")
    args = parser.parse_args()
    warm = max(200, args.frames // 20)
    for fn in (bench_browser, bench_browser_odd_chunks, bench_reframer, bench_phone):
        fn(warm)  # warm caches and allocators
    _report("Reframer.push alone, exact frames (20 ms)", bench_reframer(args.frames))
    _report("Reframer.push + Endpointer.process (20 ms)", bench_browser(args.frames))
    _report("  same, fed 128-sample chunks (per 20 ms)", bench_browser_odd_chunks(args.frames))
    _report("mulaw_decode + resample 8k->16k (20 ms)", bench_phone(args.frames))


if __name__ == "__main__":
    main()
