"""What a transport is: the wire format of one kind of connection, and nothing else.

A transport parses, validates and serialises. Everything a conversation needs beyond its
wire format (admission, the session, liveness, the send loop, the tasks and their end)
belongs to `server.lifecycle.Lifecycle`, which drives every transport the same way:

    opening = await transport.accept()        # handshake (credential); None = nothing to serve
    refused? -> await transport.refuse(refusal)   # maintenance, full, who is asking
    async with session:                       # the lifecycle's TaskGroup runs:
        await transport.opened(session, ...)  #   greet the peer
        await transport.receive(session)      #   until the peer is done
        ... transport.send(event) for each outbox event (the lifecycle's sender task)
    await transport.close(...)

A new transport is one file implementing `Transport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.events import Event
from pipelines.session import Session
from server.liveness import LivenessConfig, Traffic

#: Close codes every transport uses (docs/protocol.md).
CLOSE_OK = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_SESSION = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
#: A limit of docs/security.md (too many connections from one address or for one learner).
CLOSE_RATE_LIMITED = 4429
CLOSE_UNAVAILABLE = 4503


@dataclass(frozen=True, slots=True)
class Opening:
    """What the peer asked for in its handshake."""

    session_id: str
    #: `SessionConfig` fields that differ from the server's defaults (e.g. 8 kHz audio).
    config: dict[str, Any] = field(default_factory=dict)
    #: The learner's bearer credential, if the handshake carried one.
    credential: str | None = None
    #: The caller's phone number (phone transports): the learner is derived from it.
    caller: str | None = None
    #: The handshake proved this is one call, limited per call (a phone stream with its
    #: one-use token): its place among its address's connections is given back.
    per_call: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a session is not admitted; the transport tells its peer in its own way."""

    reason: str  # "maintenance", "server full", "session not found", ...
    code: int = CLOSE_UNAVAILABLE
    #: The machine-readable error code (protocol v1's `error.code`).
    error: str = "unavailable"


@dataclass(frozen=True, slots=True)
class Admission:
    """Who the session's learner is."""

    learner_id: str
    #: A credential issued just now (a new anonymous learner) that the peer must keep.
    issued_token: str | None = None


class Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class Transport(Protocol):
    #: Names the transport in logs ("browser", "phone", ...).
    kind: str
    #: Counters the transport bumps per message received (`rx`) and sent (`tx`).
    traffic: Traffic
    #: How long a quiet or stalled peer of this transport is kept.
    liveness: LivenessConfig
    #: The client's address (what TRUSTED_PROXIES resolves), for per-address limits.
    client: str
    #: False when the per-address connection *rate* does not apply (a phone stream whose
    #: upgrade Twilio signed: every call arrives from Twilio's addresses). Its place among
    #: the address's connections is held until `Opening.per_call` says it is one call.
    address_limited: bool

    @property
    def closed(self) -> bool: ...

    async def accept(self) -> Opening | None:
        """Run the handshake. None: the peer left or asked for nothing valid (the
        transport has already told it why and closed)."""
        ...

    async def refuse(self, refusal: Refusal) -> None:
        """Tell the peer it is not admitted, and close."""
        ...

    async def opened(self, session: Session, admission: Admission) -> None:
        """The session is live and belongs to `admission.learner_id`: greet the peer (e.g.
        protocol v1's `ready`, with a credential issued just now)."""
        ...

    async def receive(self, session: Session) -> None:
        """Feed the peer's input to the session; return when the peer is done."""
        ...

    async def send(self, event: Event) -> None:
        """Serialise one of the session's events onto the wire."""
        ...

    async def ping(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        ...
