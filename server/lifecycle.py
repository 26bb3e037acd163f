"""One life cycle for every conversation, whatever transport carries it.

Admission (the gate, e.g. maintenance, then capacity), the Session and the opened/closed
counts, liveness, the send loop and the transport's receive loop all live here, in one
TaskGroup per conversation: the peer leaving, a failure in any of them or a shutdown ends
all of them, and no task outlives its session. Transports (server/transports/) only speak
their wire format, so a new transport is one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from pipelines.outbox import Outbox, OutboxOverflow
from pipelines.session import Session
from server.liveness import CLOSE_NOT_READING, watch
from server.transports.base import CLOSE_GOING_AWAY, CLOSE_OK, Refusal, Transport

log = logging.getLogger(__name__)

#: Builds a Session for an id, its outbox and `SessionConfig` overrides (the Engine does).
SessionFactory = Callable[[str, Outbox, dict[str, Any]], Session]


class Gate(Protocol):
    """Whether new sessions are admitted at all (the admin hub implements it)."""

    def refusal(self) -> str | None:
        """Why no new session is admitted now (e.g. "maintenance"); None admits."""
        ...


class SessionWatcher(Protocol):
    """Told when a conversation starts and ends (the admin hub counts them)."""

    def session_opened(self) -> None: ...

    def session_closed(self) -> None: ...


class OpenGate:
    def refusal(self) -> str | None:
        return None


class Unwatched:
    def session_opened(self) -> None:
        pass

    def session_closed(self) -> None:
        pass


class Lifecycle:
    def __init__(
        self,
        new_session: SessionFactory,
        max_sessions: int,
        gate: Gate | None = None,
        watcher: SessionWatcher | None = None,
    ) -> None:
        self._new_session = new_session
        self.max_sessions = max_sessions
        self._gate: Gate = gate or OpenGate()
        self._watcher: SessionWatcher = watcher or Unwatched()
        self.sessions: set[Session] = set()
        #: Live transports, closed with 1001 on shutdown.
        self.transports: set[Transport] = set()

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.max_sessions

    def refusal(self) -> Refusal | None:
        reason = self._gate.refusal()
        if reason is None and self.full:
            reason = "server full"
        return None if reason is None else Refusal(reason)

    @contextlib.asynccontextmanager
    async def open_session(
        self, session_id: str, config: dict[str, Any] | None = None
    ) -> AsyncIterator[Session]:
        """A live Session (its tasks run until the block ends), counted while it lives."""
        session = self._new_session(session_id, Outbox(), config or {})
        self.sessions.add(session)
        self._watcher.session_opened()
        try:
            async with session:
                yield session
        finally:
            self.sessions.discard(session)
            self._watcher.session_closed()

    async def serve(self, transport: Transport) -> None:
        """Run one connection from handshake to close. Never raises for what a peer does."""
        opening = await transport.accept()
        if opening is None:
            return
        refusal = self.refusal()
        if refusal is not None:
            log.warning("session refused: %s", refusal.reason, extra={"transport": transport.kind})
            await transport.refuse(refusal)
            return
        self.transports.add(transport)
        try:
            async with self.open_session(opening.session_id, opening.config) as session:
                await self._converse(transport, session)
        except* (ConnectionError, RuntimeError) as group:  # the peer went away mid-send
            log.info("connection lost: %r", group.exceptions[0])
        except* Exception:
            log.exception("session failed", extra={"session_id": opening.session_id})
        finally:
            self.transports.discard(transport)
            if not transport.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await transport.close(CLOSE_OK, "")

    async def _converse(self, transport: Transport, session: Session) -> None:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(_send_loop(transport, session.outbox, session.id))
            watchdog = tasks.create_task(
                watch(transport, transport.traffic, session.outbox, session.id, transport.liveness)
            )
            try:
                await transport.opened(session)
                await transport.receive(session)
            finally:
                sender.cancel()
                watchdog.cancel()

    async def close_all(self) -> None:
        """Shutdown: close every connection (1001) so each session records what it has."""
        for transport in list(self.transports):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await transport.close(CLOSE_GOING_AWAY, "server shutting down")


async def _send_loop(transport: Transport, outbox: Outbox, session_id: str) -> None:
    send = transport.send
    traffic = transport.traffic
    try:
        while True:
            event = await outbox.get()
            await send(event)
            traffic.tx += 1
    except OutboxOverflow:
        log.warning("client stopped reading; closing", extra={"session_id": session_id})
        await transport.close(CLOSE_NOT_READING, "client not reading")
    except ConnectionResetError:
        pass
