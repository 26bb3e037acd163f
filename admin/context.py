"""Per-request and per-session correlation ids, carried by contextvars.

They live in `admin` (not `server`) because the admin middleware sets the request id and
`admin` must not import `server`; `server.logging_setup` reads both into every log line, and
the WebSocket handler sets the session id so everything a session logs carries it. Tasks
created inside a request or session copy the context, so the ids follow them.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)

# An id a client or proxy sent us is reused only when it is short and harmless in a log line.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new_request_id(incoming: str | None = None) -> str:
    """The caller's X-Request-ID when it is safe to echo, else a fresh random one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex
