"""deploy/prometheus/alerts.yml: valid for promtool, its unit tests pass, and every alert is
something an on-call engineer can act on (a runbook level, a runbook section, a case where
it fires and one where it must not, and only series the server exports)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.promql import (
    PROMETHEUS_SERIES,
    RULE_TESTS,
    RULES,
    RUNBOOK,
    exported_series,
    metric_names,
    run_promtool,
    runbook_sections,
)

RUNBOOK_URL = re.compile(
    r"^https://github\.com/yourorg/learning-voice-agent/blob/main/docs/runbook\.md#([\w-]+)$"
)
#: Runbook symptoms and failures the issue asks to be paged on, by alert.
REQUIRED = {
    "LvaHttpLatencyHigh",
    "LvaVoiceFirstAudioSlow",
    "LvaHighErrorRate",
    "LvaProviderFallbacks",
    "LvaProviderCircuitOpen",
    "LvaStageProvidersAllDown",
    "LvaCaptureJournalGrowing",
    "LvaCapturesDropped",
    "LvaDatabaseUnreachable",
    "LvaRedisUnreachable",
    "LvaEventLoopLag",
    "LvaMemoryGrowing",
    "LvaMaintenanceModeLeftOn",
    "LvaTargetDown",
}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    done = run_promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_required_alert_exists_once() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), names
    assert REQUIRED <= set(names), REQUIRED - set(names)


def test_every_alert_has_a_level_and_a_runbook_section_at_that_level() -> None:
    sections = runbook_sections()
    for alert in alerts():
        name = alert["alert"]
        severity = alert["labels"]["severity"]
        assert severity in {"P1", "P2", "P3", "P4"}, name
        for key in ("summary", "description", "runbook_url"):
            assert alert["annotations"].get(key), (name, key)
        m = RUNBOOK_URL.match(alert["annotations"]["runbook_url"])
        assert m, (name, alert["annotations"]["runbook_url"])
        anchor = m.group(1)
        assert anchor == name.lower(), (name, anchor)
        assert anchor in sections, f"docs/runbook.md has no section for {name}"
        body = sections[anchor]
        assert f"**Severity:** {severity}" in body, (name, severity)
        steps = re.findall(r"^\d\. ", body, flags=re.M)
        assert len(steps) >= 3, f"{name}: the runbook gives fewer than three first steps"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), f"never seen firing: {names - fired}"
    assert names - quiet == set(), f"never seen staying quiet: {names - quiet}"


def test_rules_name_only_series_the_server_exports() -> None:
    known = exported_series() | PROMETHEUS_SERIES
    for alert in alerts():
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= known, (alert["alert"], names - known)


def test_metric_names_are_found_in_expressions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(lva_a_bucket{route!~"/x|/y"}[5m])))'
        " > 2 and on (job) lva_b offset 1h unless up == 0 or vector(1) > bool 1e3"
    )
    assert metric_names(expr) == {"lva_a_bucket", "lva_b", "up"}


def test_runbook_links_to_its_own_sections_resolve() -> None:
    text = RUNBOOK.read_text()
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert "alerts" in links
    assert links - set(runbook_sections()) == set()
