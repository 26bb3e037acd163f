"""What one client may use: the limits of docs/security.md, checked against a `LimitStore`.

Every refusal raises `Limited` (which limit, how long to wait, a message for the client)
and is counted by name through `on_limited` (the `/metrics` counter `lva_limited_total`).
Callers turn it into their edge's error: HTTP 429 with Retry-After, or close code 4429.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import uuid
from collections.abc import AsyncIterator, Callable

from server.limits.bucket import Rate
from server.limits.settings import LimitSettings
from server.limits.store import LimitStore

#: Every limit by name (the `limit` label of `lva_limited_total`: a fixed set).
LIMITS = (
    "http_per_address",
    "http_per_learner",
    "new_learners",
    "conversation",
    "search",
    "connection_rate",
    "sockets_per_address",
    "sockets_per_learner",
    "ws_messages",
    "audio_speed",
    "admin_failures",
)


def address_key(address: str) -> str:
    """What a per-address limit counts: an IPv4 address, or an IPv6 client's /64 (one
    home or phone is given a whole /64 and can pick any address in it at will)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


class Limited(Exception):
    def __init__(self, limit: str, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class Limits:
    def __init__(
        self,
        settings: LimitSettings,
        store: LimitStore,
        on_limited: Callable[[str], None] = lambda limit: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_limited = on_limited
        self._rates = {
            "http_per_address": Rate.per_minute(settings.http_per_minute_per_address),
            "http_per_learner": Rate.per_minute(settings.http_per_minute_per_learner),
            # A whole class opening the page at once: a minute's worth at once.
            "new_learners": Rate.per_minute(settings.new_learners_per_minute, 1.0),
            "conversation": Rate.per_minute(settings.conversation_per_minute),
            "search": Rate.per_minute(settings.search_per_minute),
            "connection_rate": Rate(
                settings.connections_per_second, float(settings.connections_burst)
            ),
        }

    def refuse(self, limit: str, retry_after: float, message: str) -> Limited:
        self.on_limited(limit)
        return Limited(limit, retry_after, message)

    async def _take(self, limit: str, key: str, what: str) -> None:
        wait = await self.store.take(limit, key, self._rates[limit])
        if wait > 0:
            raise self.refuse(limit, wait, f"too many {what}; retry in {math.ceil(wait)} s")

    # --- HTTP ------------------------------------------------------------------------
    async def http_request(self, address: str) -> None:
        await self._take("http_per_address", address_key(address), "requests from this address")

    async def learner_request(self, learner_id: str) -> None:
        await self._take("http_per_learner", learner_id, "requests by this learner")

    async def new_learner(self, address: str) -> None:
        """An anonymous learner issued to a client at `address`."""
        await self._take("new_learners", address_key(address), "new learners from this address")

    async def conversation_turn(self, learner_id: str) -> None:
        await self._take("conversation", learner_id, "typed turns")

    async def anonymous_turn(self, address: str) -> None:
        """A typed turn without a credential: counted per client address."""
        await self._take("conversation", "address:" + address_key(address), "typed turns")

    async def search(self, learner_id: str) -> None:
        await self._take("search", learner_id, "searches")

    # --- voice connections -----------------------------------------------------------
    async def connection_rate(self, address: str) -> None:
        """A new voice connection from `address`."""
        key = address_key(address)
        await self._take("connection_rate", key, "new connections from this address")

    def address_place(self, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A place among the connections `address` may hold, while the connection lives."""
        return self._place(
            "sockets_per_address",
            address_key(address),
            self.settings.max_sockets_per_address,
            "connections from this address",
        )

    @contextlib.asynccontextmanager
    async def learner_socket(self, learner_id: str) -> AsyncIterator[None]:
        async with self._place(
            "sockets_per_learner",
            learner_id,
            self.settings.max_sockets_per_learner,
            "open connections for this learner",
        ):
            yield

    @contextlib.asynccontextmanager
    async def _place(self, limit: str, key: str, most: int, what: str) -> AsyncIterator[None]:
        holder = uuid.uuid4().hex
        if not await self.store.acquire(limit, key, most, holder):
            raise self.refuse(limit, 5.0, f"too many {what} (at most {most})")
        try:
            yield
        finally:
            await self.store.release(limit, key, holder)
