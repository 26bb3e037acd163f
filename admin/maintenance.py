"""Maintenance mode: a switch every worker and instance sees.

While it is on, the admin middleware answers new `/api/*` calls 503 with `Retry-After`
and the operator's message, and the WebSocket handler refuses new sessions (close code
4503) by reading `Maintenance.enabled`; conversations already running are left alone.

The state is shared through a backend so that one `POST /admin/api/maintenance` reaches
all processes: Redis when the app has one (all instances), else a small JSON file in a
directory the workers share (all workers of one host), else process memory (one process).
Each process re-reads the shared state about once a second (`refresh`), so `enabled` is a
plain attribute read on the hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("admin.maintenance")

MAX_MESSAGE = 500
DEFAULT_MESSAGE = "The service is under maintenance. Please try again later."


@dataclass(slots=True, frozen=True)
class MaintenanceState:
    enabled: bool = False
    message: str = ""
    retry_after: int = 300  # seconds, sent as the Retry-After header
    changed_at: float | None = None  # unix seconds of the last change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaintenanceState:
        return cls(
            enabled=bool(data.get("enabled", False)),
            message=str(data.get("message", ""))[:MAX_MESSAGE],
            retry_after=int(data.get("retry_after", 300)),
            changed_at=data.get("changed_at"),
        )


class MaintenanceBackend(Protocol):
    name: str

    async def load(self) -> MaintenanceState | None: ...

    async def save(self, state: MaintenanceState) -> None: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """One process only: the state lives in the `Maintenance` object itself."""

    name = "memory"

    def __init__(self) -> None:
        self._state: MaintenanceState | None = None

    async def load(self) -> MaintenanceState | None:
        return self._state

    async def save(self, state: MaintenanceState) -> None:
        self._state = state

    async def close(self) -> None:
        pass


class FileBackend:
    """A JSON file shared by the workers of one host (written atomically)."""

    name = "file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> MaintenanceState | None:
        try:
            return MaintenanceState.from_dict(json.loads(self.path.read_text("utf-8")))
        except FileNotFoundError:
            return None

    def _write(self, state: MaintenanceState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".maintenance-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state.to_dict(), fh)
        os.replace(tmp, self.path)

    async def load(self) -> MaintenanceState | None:
        return await asyncio.to_thread(self._read)

    async def save(self, state: MaintenanceState) -> None:
        await asyncio.to_thread(self._write, state)

    async def close(self) -> None:
        pass


class RedisBackend:
    """A Redis key shared by every instance behind the load balancer."""

    name = "redis"

    def __init__(self, url: str, key: str = "lva:maintenance", timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis  # imported here: only needed with Redis

        self.key = key
        self._timeout = timeout
        self._client = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    async def load(self) -> MaintenanceState | None:
        raw = await asyncio.wait_for(self._client.get(self.key), self._timeout)
        return None if raw is None else MaintenanceState.from_dict(json.loads(raw))

    async def save(self, state: MaintenanceState) -> None:
        await asyncio.wait_for(
            self._client.set(self.key, json.dumps(state.to_dict())), self._timeout
        )

    async def close(self) -> None:
        await self._client.aclose()


class Maintenance:
    """The switch, as this process currently knows it."""

    def __init__(self, backend: MaintenanceBackend | None = None) -> None:
        self.backend: MaintenanceBackend = backend or MemoryBackend()
        self.state = MaintenanceState()
        self.last_sync_error: str | None = None

    @property
    def enabled(self) -> bool:
        """Read on every request and every new WebSocket: a plain attribute, no I/O."""
        return self.state.enabled

    @property
    def message(self) -> str:
        return self.state.message or DEFAULT_MESSAGE

    async def set(
        self, enabled: bool, message: str = "", retry_after: int = 300
    ) -> MaintenanceState:
        """Change the switch everywhere. Raises if the shared backend cannot be written,
        so the operator is told instead of believing a switch that other workers never saw."""
        state = MaintenanceState(
            enabled=enabled,
            message=message[:MAX_MESSAGE],
            retry_after=retry_after,
            changed_at=time.time(),
        )
        await self.backend.save(state)
        self.state = state
        self.last_sync_error = None
        log.warning(
            "maintenance mode %s",
            "enabled" if enabled else "disabled",
            extra={"maintenance_message": state.message, "retry_after": retry_after},
        )
        return state

    async def refresh(self) -> None:
        """Pick up a change another process made; keeps the last known state on failure."""
        try:
            state = await self.backend.load()
        except Exception as exc:  # a sync failure must never take the server down
            if self.last_sync_error is None:
                log.warning("maintenance state unreadable from %s: %r", self.backend.name, exc)
            self.last_sync_error = f"{type(exc).__name__}: {exc}"
            return
        self.last_sync_error = None
        if state is not None and state != self.state:
            self.state = state

    def to_dict(self) -> dict[str, Any]:
        d = self.state.to_dict()
        d["backend"] = self.backend.name
        if self.last_sync_error:
            d["sync_error"] = self.last_sync_error
        return d
