"""Dependency health checks, run concurrently, each under its own timeout.

A check is an async function returning one of:
  * `True` / `False` (healthy / unhealthy),
  * a dict with a `"status"` of "healthy", "degraded" or "unhealthy", an optional
    `"reason"`, and any other details (e.g. a provider chain's circuit states),
or raising (unhealthy, with the exception as the reason). A check that does not answer
within its timeout is unhealthy ("timed out after 2.0s"): a hung database must not hang
the health endpoint. Overall status: any *critical* check unhealthy -> unhealthy; any
other check not healthy -> degraded; otherwise healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)

CheckFn = Callable[[], Awaitable[bool | dict[str, Any]]]


@dataclass(slots=True)
class _Check:
    name: str
    fn: CheckFn
    critical: bool
    timeout: float


class HealthRegistry:
    def __init__(self) -> None:
        self._checks: dict[str, _Check] = {}

    def add(self, name: str, fn: CheckFn, *, critical: bool = True, timeout: float = 2.0) -> None:
        if name in self._checks:
            raise ValueError(f"health check {name!r} is already registered")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._checks[name] = _Check(name, fn, critical, timeout)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def _run(self, check: _Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                result = await check.fn()
        except TimeoutError:
            out: dict[str, Any] = {
                "status": UNHEALTHY,
                "reason": f"timed out after {check.timeout:g}s",
            }
        except Exception as exc:
            out = {"status": UNHEALTHY, "reason": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            out = _normalise(result)
        out["critical"] = check.critical
        out["latency_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
        return out

    async def run(self) -> dict[str, Any]:
        """Every check's result and the overall status with the reasons for it."""
        checks = list(self._checks.values())
        results = await asyncio.gather(*(self._run(c) for c in checks))
        by_name = {c.name: r for c, r in zip(checks, results, strict=True)}
        overall = HEALTHY
        reasons: list[str] = []
        for name, r in by_name.items():
            if r["status"] == HEALTHY:
                continue
            why = f"{name}: {r['status']}" + (f" ({r['reason']})" if r.get("reason") else "")
            reasons.append(why)
            if r["status"] == UNHEALTHY and r["critical"]:
                overall = UNHEALTHY
            elif overall == HEALTHY:
                overall = DEGRADED
        return {"status": overall, "reasons": reasons, "checks": by_name}


def _normalise(result: bool | dict[str, Any]) -> dict[str, Any]:
    if isinstance(result, bool):
        return {"status": HEALTHY if result else UNHEALTHY}
    if isinstance(result, dict):
        out = dict(result)
        status = out.get("status")
        if status not in _STATUSES:
            return {
                **out,
                "status": UNHEALTHY,
                "reason": f"check returned an unknown status {status!r}",
            }
        return out
    return {"status": UNHEALTHY, "reason": f"check returned {type(result).__name__}"}
