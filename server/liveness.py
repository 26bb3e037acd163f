"""Liveness of one connection, checked every few seconds instead of every frame.

One scheme for every transport, parameterised per transport by a `LivenessConfig`.
aiohttp's own `heartbeat` re-arms its timer on every received chunk (one extra callback per
20 ms audio frame per session) and, after a server-initiated close, leaves a 30 s timer
holding the whole connection. This watchdog costs one counter increment per received
message and one timer per connection every `tick_s`:

* quiet peer: nothing received for `idle_ping_s` -> we ping; nothing for `idle_close_s`
  -> close 4408 "client not responding" (a dead peer, a half-open TCP connection);
* stalled reader: the send queue has something and the sender has sent nothing for
  `stall_s` (the peer stopped reading, the socket buffers are full) -> close 4408
  "client not reading". What was still queued is dropped and counted in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sized
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

CLOSE_NOT_READING = 4408


@dataclass(slots=True)
class Traffic:
    """Counters the receive and send loops bump (cheap: one int add per message)."""

    rx: int = 0
    tx: int = 0


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    tick_s: float = 5.0
    idle_ping_s: float = 30.0
    idle_close_s: float = 60.0
    stall_s: float = 10.0


class Peer(Protocol):
    """What the watchdog needs of a connection (every transport provides it)."""

    @property
    def closed(self) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        ...


async def watch(
    peer: Peer,
    traffic: Traffic,
    backlog: Sized,
    session_id: str,
    cfg: LivenessConfig = LivenessConfig(),
) -> None:
    """Run for the life of the connection (its owner cancels it). `backlog` is the
    connection's send queue."""
    loop = asyncio.get_running_loop()
    last_rx, rx_at = traffic.rx, loop.time()
    last_tx, tx_at = traffic.tx, loop.time()
    pinged = False
    while not peer.closed:
        await asyncio.sleep(cfg.tick_s)
        now = loop.time()
        if traffic.rx != last_rx:
            last_rx, rx_at, pinged = traffic.rx, now, False
        if traffic.tx != last_tx or not len(backlog):
            last_tx, tx_at = traffic.tx, now
        if now - tx_at >= cfg.stall_s:
            await _close(peer, session_id, "client not reading", len(backlog))
            return
        idle = now - rx_at
        if idle >= cfg.idle_close_s:
            await _close(peer, session_id, "client not responding", len(backlog))
            return
        if idle >= cfg.idle_ping_s and not pinged:
            pinged = True
            with contextlib.suppress(ConnectionError, RuntimeError):
                await peer.ping()


async def _close(peer: Peer, session_id: str, why: str, dropped: int) -> None:
    log.warning("closing: %s", why, extra={"session_id": session_id, "dropped_events": dropped})
    try:
        async with asyncio.timeout(2.0):
            await peer.close(CLOSE_NOT_READING, why)
    except (ConnectionError, RuntimeError, TimeoutError):
        peer.abort()  # the close frame cannot get through a full socket: drop the connection
    except asyncio.CancelledError:
        # The close ends the receive loop, whose owner then cancels this watchdog while the
        # close frame still waits behind a full socket: drop the connection all the same,
        # or the socket stays open (its buffer never flushed) for as long as the peer does.
        peer.abort()
        raise
