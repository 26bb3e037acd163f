"""Health check results as Prometheus gauges, so alert rules see what the detailed health
endpoint says.

The hub runs every registered check every few seconds (and on each detailed-health
request) and hands the report to `HealthExporter.export`:

* `lva_health_check_up{check}`: 0 while a check is unhealthy (failed, raised, timed out),
  1 while it is healthy or degraded; `database` and `session_store` are the dependencies;
* from the `providers` check (`admin.checks.providers_check`), each member's circuit state:
  `lva_provider_circuit_open{stage,provider}` (1 while open or half-open: failing and not yet
  proven back) and `lva_stage_providers_available{stage}` (members whose circuit is not open;
  0 means the stage cannot serve);
* the fallback pairs a chain can take (each member to every later one) start at 0 in
  `lva_provider_fallbacks_total`, so the very first fallback is an increase Prometheus sees.

Every label goes through the hub's `LabelGuard`, the same one the observer uses, so the
provider names here and in the error and fallback counters are spelt alike.
"""

from __future__ import annotations

from typing import Any

from admin.health import UNHEALTHY
from admin.prom import LabelGuard, PromMetrics

_CLOSED, _OPEN = "closed", "open"


class HealthExporter:
    def __init__(self, prom: PromMetrics, labels: LabelGuard) -> None:
        self._prom = prom
        self._labels = labels
        self._chains_seen: set[tuple[str, ...]] = set()

    def export(self, report: dict[str, Any]) -> None:
        """`report`: what `HealthRegistry.run` returns."""
        checks = report.get("checks")
        if not isinstance(checks, dict):
            return
        for name, result in checks.items():
            up = 0 if not isinstance(result, dict) or result.get("status") == UNHEALTHY else 1
            self._prom.health_check_up.labels(self._labels("check", name)).set(up)
        providers = checks.get("providers")
        if isinstance(providers, dict) and isinstance(providers.get("stages"), dict):
            for stage, members in providers["stages"].items():
                if isinstance(members, list):
                    self._export_stage(self._labels("stage", stage), members)

    def _export_stage(self, stage: str, members: list[Any]) -> None:
        names: list[str] = []
        available = 0
        for member in members:
            if not isinstance(member, dict):
                continue
            provider = self._labels("provider", str(member.get("provider", "unknown")))
            state = member.get("state", _CLOSED)
            self._prom.provider_circuit_open.labels(stage, provider).set(
                0 if state == _CLOSED else 1
            )
            available += state != _OPEN
            names.append(provider)
        self._prom.stage_providers_available.labels(stage).set(available)
        self._init_fallbacks(stage, names)

    def _init_fallbacks(self, stage: str, names: list[str]) -> None:
        key = (stage, *names)
        if key in self._chains_seen:
            return
        self._chains_seen.add(key)
        for i, first in enumerate(names):
            for later in names[i + 1 :]:
                if later != first:
                    self._prom.provider_fallbacks.labels(stage, first, later)
