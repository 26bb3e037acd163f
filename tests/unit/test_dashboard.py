"""deploy/grafana/voice-agent.json: every query parses as PromQL (promtool checks them as
recording rules) and names only series the server exports; the panels an on-call engineer
needs are there, laid out without overlaps, each on the dashboard's data source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.promql import (
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_SERIES,
    exported_series,
    metric_names,
    run_promtool,
)

#: Grafana's variables, replaced by what they stand for when a panel is drawn.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$job": "learning-voice-agent",
    "$instance": ".*",
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in)."""
    out = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, (panel["title"], expr)
            out.append((panel["title"], expr))
    return out


def test_every_query_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())
    ]
    assert len(rules) >= 25
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run_promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_queries_name_only_series_the_server_exports() -> None:
    known = exported_series() | PROMETHEUS_SERIES
    used: set[str] = set()
    for title, expr in queries():
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= known, (title, names - known)
        used |= names
    # Every series an operator looks at is on the dashboard somewhere.
    unused = {n for n in known if not n.endswith(("_sum", "_count"))} - used
    assert unused <= {"lva_admin_auth_failures_total"}, unused


def test_the_panels_an_operator_needs_are_there() -> None:
    exprs = " ".join(expr for _, expr in queries())
    for needed in (
        "lva_http_requests_total",
        "lva_http_server_errors_total",
        "lva_http_request_duration_seconds_bucket",
        "lva_voice_sessions",
        "lva_provider_circuit_open",
        "lva_stage_providers_available",
        "lva_capture_journal_backlog",
        "lva_event_loop_lag_seconds",
    ):
        assert needed in exprs, needed
    heatmaps = [p for p in panels() if p["type"] == "heatmap"]
    stages = {
        re.search(r'stage="(\w+)"', t["expr"]).group(1)  # type: ignore[union-attr]
        for p in heatmaps
        for t in p["targets"]
    }
    assert stages == {"stt_final", "llm_first_token", "tts_first_audio", "first_audio"}
    for p in heatmaps:
        assert all(t["format"] == "heatmap" for t in p["targets"]), p["title"]
        assert all("_bucket" in t["expr"] and "by (le)" in t["expr"] for t in p["targets"])
    route_p95 = [p for p in panels() if p["title"] == "HTTP p95 by route"]
    assert route_p95 and "by (route, le)" in route_p95[0]["targets"][0]["expr"]


def test_panels_use_the_dashboard_data_source_and_do_not_overlap() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels():
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
            assert {t["refId"] for t in p["targets"]} == {
                chr(65 + i) for i in range(len(p["targets"]))
            }
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]


def test_provisioning_points_grafana_at_the_dashboard() -> None:
    config = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards.yml").read_text())
    provider = config["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert dashboard()["uid"] == "lva-voice-agent"
