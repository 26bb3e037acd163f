"""A lossy UDP path for WebRTC tests: two sockets between a client and a server, dropping a
share of the datagrams each way (every kind: STUN, DTLS, SCTP, RTP, RTCP).

Each side is told the relay's address instead of the other's (`rewrite` edits the SDP's
candidates), so everything between them goes through it:

    client C  <->  A [relay] B  <->  server S
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field

_CANDIDATE = re.compile(
    r"^a=candidate:(\S+) (\d) (udp|UDP) (\d+) ([0-9.]+) (\d+) typ host(.*)$", re.MULTILINE
)


def host_address() -> str:
    """The IPv4 address aiortc offers host candidates on (it skips loopback)."""
    from aioice.ice import get_host_addresses

    return get_host_addresses(use_ipv4=True, use_ipv6=False)[0]


def host_candidate(sdp: str) -> tuple[str, int]:
    """The first IPv4 UDP host candidate's address."""
    found = _CANDIDATE.search(sdp)
    if found is None:
        raise ValueError("no IPv4 host candidate in the SDP")
    return found.group(5), int(found.group(6))


def rewrite(sdp: str, address: tuple[str, int]) -> str:
    """The SDP with one candidate, at `address`, and no others."""
    out: list[str] = []
    placed: set[str] = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            found = _CANDIDATE.match(line)
            if found is None or found.group(2) != "1":
                continue
            key = found.group(1)
            if placed and key not in placed:
                continue
            placed.add(key)
            line = (
                f"a=candidate:{key} 1 udp {found.group(4)} {address[0]} {address[1]} "
                f"typ host{found.group(7)}"
            )
        elif line.startswith("a=end-of-candidates"):
            pass
        out.append(line)
    return "\r\n".join(out) + "\r\n"


@dataclass
class Counts:
    forwarded: int = 0
    dropped: int = 0


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.received(self.name, data, addr)


@dataclass
class LossyRelay:
    loss: float
    seed: int = 16
    host: str = "127.0.0.1"
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self.client_side: _Side | None = None  # A
        self.server_side: _Side | None = None  # B
        self.client_addr: tuple[str, int] | None = None  # C, learnt from its first datagram
        self.server_addr: tuple[str, int] | None = None  # S, from the server's answer

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.client_side = await loop.create_datagram_endpoint(
            lambda: _Side(self, "a"), local_addr=(self.host, 0)
        )
        _, self.server_side = await loop.create_datagram_endpoint(
            lambda: _Side(self, "b"), local_addr=(self.host, 0)
        )

    @property
    def a(self) -> tuple[str, int]:
        assert self.client_side and self.client_side.transport
        return self.client_side.transport.get_extra_info("sockname")[:2]

    @property
    def b(self) -> tuple[str, int]:
        assert self.server_side and self.server_side.transport
        return self.server_side.transport.get_extra_info("sockname")[:2]

    def received(self, side: str, data: bytes, addr: tuple[str, int]) -> None:
        if side == "a":
            self.client_addr = addr
            target, out = self.server_addr, self.server_side
        else:
            target, out = self.client_addr, self.client_side
        if target is None or out is None or out.transport is None:
            return
        if self._random.random() < self.loss:
            self.counts.dropped += 1
            return
        self.counts.forwarded += 1
        out.transport.sendto(data, target)

    def close(self) -> None:
        for side in (self.client_side, self.server_side):
            if side is not None and side.transport is not None:
                side.transport.close()
