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
from server.limits.policy import Limited
from server.liveness import CLOSE_NOT_READING, watch
from server.transports.base import (
    CLOSE_GOING_AWAY,
    CLOSE_OK,
    CLOSE_RATE_LIMITED,
    Admission,
    Opening,
    Refusal,
    Refused,
    Transport,
)

log = logging.getLogger(__name__)

#: Builds a Session for an id, its outbox, `SessionConfig` overrides and its learner.
SessionFactory = Callable[[str, Outbox, dict[str, Any], str], Session]


class Gate(Protocol):
    """Whether new sessions are admitted at all (the admin hub implements it)."""

    def refusal(self) -> str | None:
        """Why no new session is admitted now (e.g. "maintenance"); None admits."""
        ...


class SessionWatcher(Protocol):
    """Told when a conversation starts and ends (the admin hub counts them)."""

    def session_opened(self) -> None: ...

    def session_closed(self) -> None: ...


class Authority(Protocol):
    """Who is asking, and may they have this session (server/identity/ implements it)."""

    async def admit(self, session_id: str, credential: str | None, caller: str | None) -> Admission:
        """The learner, with the session claimed for them; raises `Refused` (a bad
        credential, another learner's session, storage down)."""
        ...


class ConnectionLimits(Protocol):
    """How fast one address may connect, and how many connections one address and one
    learner may hold (server/limits/). Each raises `Limited` to refuse."""

    async def connection_rate(self, address: str) -> None: ...

    def address_place(self, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a connection from `address` lives (or until it proves it is limited
        per call, `Opening.per_call`)."""
        ...

    def learner_socket(self, learner_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one of the learner's connections lives; raises `Limited`."""
        ...


class Unlimited:
    async def connection_rate(self, address: str) -> None:
        pass

    def address_place(self, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def learner_socket(self, learner_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class OneLearner:
    """Every session belongs to one local learner: for tools and tests without identity."""

    async def admit(self, session_id: str, credential: str | None, caller: str | None) -> Admission:
        return Admission("local")


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
        authority: Authority | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._new_session = new_session
        self._limits: ConnectionLimits = limits or Unlimited()
        self._authority: Authority = authority or OneLearner()
        self.max_sessions = max_sessions
        self._gate: Gate = gate or OpenGate()
        self._watcher: SessionWatcher = watcher or Unwatched()
        self.sessions: set[Session] = set()
        #: Live transports and their session ids (closed with 1001 on shutdown).
        self.transports: dict[Transport, str] = {}
        self._ended = asyncio.Condition()
        #: Connections admitted by the gate and capacity, still being checked by the
        #: authority (a credential, a database round trip): they hold a slot meanwhile.
        self._admitting = 0
        #: Conversations served in a task of their own (`start`), e.g. WebRTC, whose
        #: signalling request ends long before the conversation does.
        self._serving: set[asyncio.Task[None]] = set()

    @property
    def full(self) -> bool:
        return len(self.sessions) + self._admitting >= self.max_sessions

    def refusal(self) -> Refusal | None:
        reason = self._gate.refusal()
        if reason is None and self.full:
            reason = "server full"
        return None if reason is None else Refusal(reason)

    @contextlib.asynccontextmanager
    async def open_session(
        self,
        session_id: str,
        config: dict[str, Any] | None = None,
        learner_id: str = "local",
    ) -> AsyncIterator[Session]:
        """A live Session (its tasks run until the block ends), counted while it lives."""
        session = self._new_session(session_id, Outbox(), config or {}, learner_id)
        self.sessions.add(session)
        self._watcher.session_opened()
        try:
            async with session:
                yield session
        finally:
            self.sessions.discard(session)
            self._watcher.session_closed()
            async with self._ended:
                self._ended.notify_all()

    async def serve(self, transport: Transport) -> None:
        """Run one connection from handshake to close. Never raises for what a peer does."""
        early = self.refusal()  # maintenance or full: say so before any handshake
        if early is not None:
            await self._refuse(transport, early)
            return
        async with contextlib.AsyncExitStack() as held:
            # A place of the client's address until the handshake is done (or the whole
            # conversation): connections still in their handshake count too.
            by_address = contextlib.AsyncExitStack()
            held.push_async_callback(by_address.aclose)
            refused = await self._limit_address(transport, by_address)
            if refused is not None:
                await self._refuse(transport, refused)
                return
            opening = await transport.accept()
            if opening is None:
                return
            if opening.per_call:  # proven to be one call: not counted against its address
                await by_address.aclose()
            admission = await self._admit(opening)
            if not isinstance(admission, Refusal):
                limit = self._limits.learner_socket(admission.learner_id)
                admission = await self._hold(held, limit) or admission
            if isinstance(admission, Refusal):
                await self._refuse(transport, admission)
                return
            await self._run(transport, opening, admission)

    async def _limit_address(
        self, transport: Transport, held: contextlib.AsyncExitStack
    ) -> Refusal | None:
        if transport.address_limited:  # signed phone streams arrive from Twilio's addresses
            try:
                await self._limits.connection_rate(transport.client)
            except Limited as exc:
                return Refusal(str(exc), CLOSE_RATE_LIMITED, "rate_limited")
        return await self._hold(held, self._limits.address_place(transport.client))

    @staticmethod
    async def _hold(
        held: contextlib.AsyncExitStack, limit: contextlib.AbstractAsyncContextManager[None]
    ) -> Refusal | None:
        try:
            await held.enter_async_context(limit)
        except Limited as exc:
            return Refusal(str(exc), CLOSE_RATE_LIMITED, "rate_limited")
        return None

    @staticmethod
    async def _refuse(transport: Transport, refusal: Refusal) -> None:
        log.warning("session refused: %s", refusal.reason, extra={"transport": transport.kind})
        await transport.refuse(refusal)

    async def _run(self, transport: Transport, opening: Opening, admission: Admission) -> None:
        self.transports[transport] = opening.session_id
        try:
            async with self.open_session(
                opening.session_id, opening.config, admission.learner_id
            ) as session:
                await self._converse(transport, session, admission)
        except* (ConnectionError, RuntimeError) as group:  # the peer went away mid-send
            log.info("connection lost: %r", group.exceptions[0])
        except* Exception:
            log.exception("session failed", extra={"session_id": opening.session_id})
        finally:
            self.transports.pop(transport, None)
            if not transport.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await transport.close(CLOSE_OK, "")

    def start(self, transport: Transport) -> asyncio.Task[None]:
        """Serve `transport` in a task the lifecycle owns (its caller may return at once);
        `close_all` waits for it at shutdown."""
        task = asyncio.create_task(self.serve(transport), name=f"serve-{transport.kind}")
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        return task

    async def _admit(self, opening: Opening) -> Admission | Refusal:
        """The gate, capacity, then who is asking: all settled before a Session exists."""
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        self._admitting += 1
        try:
            return await self._authority.admit(
                opening.session_id, opening.credential, opening.caller
            )
        except Refused as exc:
            return exc.refusal
        finally:
            self._admitting -= 1

    async def _converse(self, transport: Transport, session: Session, admission: Admission) -> None:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(_send_loop(transport, session.outbox, session.id))
            watchdog = tasks.create_task(
                watch(transport, transport.traffic, session.outbox, session.id, transport.liveness)
            )
            try:
                await transport.opened(session, admission)
                await transport.receive(session)
            finally:
                sender.cancel()
                watchdog.cancel()

    async def close_all(self) -> None:
        """Shutdown: close every connection (1001) so each session records what it has."""
        await self.end_sessions(
            set(self.transports.values()), CLOSE_GOING_AWAY, "server shutting down"
        )
        serving = set(self._serving)
        if serving:  # still handshaking, or closing: give them a moment, then cancel
            _, late = await asyncio.wait(serving, timeout=5.0)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=2.0)

    async def end_sessions(
        self, session_ids: set[str], code: int, reason: str, wait_s: float = 5.0
    ) -> None:
        """Close the live connections of these sessions (e.g. the learner deleted them) and
        wait, at most `wait_s`, until each session has recorded what it had and ended."""
        for transport, session_id in list(self.transports.items()):
            if session_id in session_ids:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await transport.close(code, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s), self._ended:
                await self._ended.wait_for(
                    lambda: not any(s.id in session_ids for s in self.sessions)
                )


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
