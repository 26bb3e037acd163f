"""Ready-made health checks over the server's parts, read through duck-typed attributes.

`admin` never imports `server` or `pipelines` internals: these take the objects the app
factory hands them and read only the narrow attributes named here (`depth`,
`journal_backlog`, `healthy` of the capture writer; `stt`/`llm`/`tts` of the providers and
an optional `status()` of a provider chain, listing each member's circuit-breaker state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from admin.health import DEGRADED, HEALTHY, UNHEALTHY

Check = Callable[[], Awaitable[dict[str, Any]]]


def capture_writer_check(writer: Any) -> Check:
    """Degraded while captures wait in the disk journal or the database is failing: none
    are lost (they are written when it is back), but an operator should know."""

    async def check() -> dict[str, Any]:
        depth = int(writer.depth)
        backlog = int(writer.journal_backlog)
        failing = not bool(getattr(writer, "healthy", True))
        out: dict[str, Any] = {"status": HEALTHY, "queue_depth": depth, "journal_backlog": backlog}
        reasons = []
        if failing:
            reasons.append("database writes failing; captures go to the journal")
        if backlog:
            reasons.append(f"{backlog} capture(s) in the journal awaiting the database")
        if reasons:
            out["status"] = DEGRADED
            out["reason"] = "; ".join(reasons)
        return out

    return check


def providers_check(providers: Any, ready: asyncio.Event | None = None) -> Check:
    """Circuit state of every provider of each stage. A stage whose providers are all open
    cannot serve: unhealthy; some open, or models still loading: degraded."""

    async def check() -> dict[str, Any]:
        stages: dict[str, list[dict[str, Any]]] = {}
        problems: list[str] = []
        worst = HEALTHY
        for stage in ("stt", "llm", "tts"):
            provider = getattr(providers, stage, None)
            if provider is None:
                continue
            status = getattr(provider, "status", None)
            if callable(status):
                members = [dict(m) for m in status()]
            else:  # a single provider without a breaker (the embedded defaults)
                name = getattr(provider, "name", type(provider).__name__)
                members = [{"provider": name, "state": "closed"}]
            stages[stage] = members
            open_ = [m["provider"] for m in members if m.get("state") == "open"]
            if open_ and len(open_) == len(members):
                worst = UNHEALTHY
                problems.append(f"{stage}: every provider's circuit is open")
            elif open_:
                worst = DEGRADED if worst == HEALTHY else worst
                problems.append(f"{stage}: circuit open for {', '.join(open_)}")
        out: dict[str, Any] = {"status": worst, "stages": stages}
        if ready is not None:
            out["models_ready"] = ready.is_set()
            if not ready.is_set():
                worst = DEGRADED if worst == HEALTHY else worst
                out["status"] = worst
                problems.append("embedded models are still loading")
        if problems:
            out["reason"] = "; ".join(problems)
        return out

    return check
