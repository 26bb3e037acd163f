"""Helpers for checking PromQL shipped in deploy/: which metrics an expression names, which
series the server exports, and promtool (Debian's `prometheus` package) when present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "voice-agent.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

#: Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def exported_series() -> set[str]:
    """Every series name the server's metrics can expose, in single- and multi-process mode
    alike (the process collector's `process_*` series exist in single-process mode only,
    so nothing shipped may rely on them)."""
    from admin.prom import PromMetrics

    registry = CollectorRegistry()
    prom = PromMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.name.startswith("process_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    assert prom.registry is registry
    return names


def promtool() -> str:
    """promtool's path, or a loud skip where Debian's `prometheus` package is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "!!! promtool is MISSING: the Prometheus rule and dashboard checks did NOT run. "
            "Install Debian's `prometheus` package (scripts/ensure-test-deps.sh does as root)."
        )
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def github_slug(heading: str) -> str:
    """The anchor a Markdown heading gets on GitHub."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Anchor -> that section's text (up to the next heading of any level)."""
    text = RUNBOOK.read_text()
    parts = re.split(r"^(#{1,6} .+)$", text, flags=re.M)
    out: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        out[github_slug(heading.lstrip("#"))] = body
    return out
