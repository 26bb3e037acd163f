"""The Tracing section of the benchmarks document: written in place between its markers,
and carried over when `make bench` rewrites the rest of the document."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench_tracing import MARKERS, summary, write_section
from loadtest.benchdoc import _kept_section


def _section(body: str) -> str:
    return f"{MARKERS[0]}\n## Tracing\n\n{body}\n{MARKERS[1]}\n"


def test_the_section_is_added_once_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    write_section(doc, _section("first run"))
    write_section(doc, _section("second run"))
    text = doc.read_text()
    assert text.count(MARKERS[0]) == 1 and "second run" in text and "first run" not in text
    assert text.startswith("# Benchmarks\n\nintro\n")
    doc.write_text(text + "\n## Steps\n")
    write_section(doc, _section("third run"))
    assert doc.read_text().endswith("third run\n" + MARKERS[1] + "\n\n## Steps\n")


def test_a_regenerated_document_keeps_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    assert _kept_section(doc) == ""
    doc.write_text("old results\n\n" + _section("kept figures") + "\nmore old results\n")
    kept = _kept_section(doc)
    assert kept.startswith(MARKERS[0]) and "kept figures" in kept
    assert "old results" not in kept


def test_the_overhead_compares_cpu_per_session_minute_round_by_round() -> None:
    def run(tracing: bool, cpu: float, p50: float, p95: float) -> dict:
        return {
            "tracing": tracing,
            "cpu_s_per_session_minute": cpu,
            "overhead_ms": {"p50": p50, "p95": p95},
        }

    s = summary(
        [
            run(False, 0.1, 2, 8),
            run(True, 0.102, 2.5, 9),
            run(True, 0.104, 3, 9),
            run(False, 0.1, 2, 10),
        ]
    )
    assert round(s["cpu_overhead_pct"], 6) == 3.0
    assert [round(p, 6) for p in s["pair_overheads_pct"]] == [2.0, 4.0]
    assert round(s["median_pair_pct"], 6) == 3.0
    assert s["p50_overhead_ms"] == 0.75 and s["p95_overhead_ms"] == 0.0
