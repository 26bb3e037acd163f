"""The WebRTC section of the benchmarks document: the headline comes from the largest step
that held, and `make bench` carries the section over when it rewrites the document."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench_webrtc import MARKERS, holds, markdown, section, write_section
from loadtest.benchdoc import _kept_section


def _step(n: int, p95: float, cores: float, gen: float = 0.5) -> dict:
    return {
        "sessions": n,
        "server_cores": cores,
        "sessions_per_core": round(n / cores, 1),
        "rss_per_session_kb": 900.0,
        "turns": 4 * n,
        "turns_expected_about": 4.0 * n,
        "latency_ms": {"p50": 1060.0, "p95": 870 + p95},
        "overhead_ms": {"p50": 190.0, "p95": p95},
        "generator_cores": gen,
        "errors": 0,
    }


def test_the_headline_is_the_largest_step_that_held(tmp_path: Path) -> None:
    steps = [_step(1, 210, 0.09), _step(10, 220, 0.5), _step(20, 600, 0.9, gen=0.95)]
    assert holds(steps[1], steps[0]) and not holds(steps[2], steps[0])
    text = section(steps, "2026-11-29T19:00:00Z", markdown(steps, ""))
    assert "**20.0 WebRTC sessions per core**" in text  # the 10-session step: 10 / 0.5
    assert "generator used 0.95" in text and "| 20 | 0.9 |" in text

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Steps\n")
    write_section(doc, text)
    write_section(doc, text.replace("WebRTC sessions", "sessions over WebRTC"))
    written = doc.read_text()
    assert written.count(MARKERS[0]) == 1 and "sessions over WebRTC" in written
    assert written.index(MARKERS[1]) < written.index("## Steps")
    kept = _kept_section(doc, MARKERS)
    assert kept.startswith(MARKERS[0]) and "sessions over WebRTC" in kept
