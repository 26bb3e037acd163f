"""The packet-loss benchmark: what each way of handling a gap hands the recogniser, and its
section of the benchmarks document, which `make bench` carries over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.benchdoc import _kept_section
from loadtest.conceal_wer import MARKERS, opus_packets, received, section
from loadtest.turn_eval import replace_section

pytest.importorskip("aiortc")


def test_each_way_hands_over_what_it_says() -> None:
    t = np.arange(48000)  # one second of a 180 Hz voice at 48 kHz
    voice = (6000 * np.sin(2 * np.pi * 180 * t / 48000)).astype("<i2").tobytes()
    packets = opus_packets(voice)
    assert len(packets) == 50
    lost = {10, 11, 30}
    whole = received(packets, set(), "splice")
    assert len(whole) == 50 * 320 * 2  # 20 ms at 16 kHz, PCM16
    assert len(received(packets, lost, "splice")) == 47 * 320 * 2
    quiet = np.frombuffer(received(packets, lost, "silence"), dtype="<i2").reshape(50, 320)
    filled = np.frombuffer(received(packets, lost, "conceal"), dtype="<i2").reshape(50, 320)
    # Silence where a packet was lost (the resampler's ring spills a little over the edges,
    # the voice is at 6000); concealment keeps the voice's level there.
    assert np.abs(quiet[30, 40:280]).max() < 50
    assert np.sqrt(np.mean(filled[30].astype(float) ** 2)) > 1000


def test_the_section_reports_every_way_and_is_carried_over(tmp_path: Path) -> None:
    rates = {0.05: {"conceal": [0.0, 0.05, 0.15], "silence": [0.2, 0.0, 0.0], "splice": [0.3]}}
    text = section(0.025, rates, 3, (40.0, 90.0), 1.5)
    assert "| 5% | conceal | 0.067 | 0.150 | 0.150 | 1/3 |" in text
    assert "| 5% | silence | 0.067 | 0.200 | 0.200 | 1/3 |" in text
    assert "| 5% | splice | 0.300 | 0.300 | 0.300 | 1/1 |" in text
    assert "40 us median, 90 us p99" in text
    doc = tmp_path / "benchmarks.md"
    doc.write_text(replace_section("# Benchmarks\n", text, "conceal"))
    assert _kept_section(doc, MARKERS).count("| 5% |") == 3
