"""Who the client is at the edge: the peer address, or the address a trusted proxy names.

The proxies' header (FORWARDED_HEADER: `X-Forwarded-For` or RFC 7239 `Forwarded`; one, so
that a client cannot write the other one itself) is honoured only when the peer is in
TRUSTED_PROXIES, and then read from the right: each hop appends the address it received
from, so the rightmost address that is not itself a trusted proxy is the client. Anything
a client wrote to the left of that is ignored (a client can put any address there). Every
line of the header counts (a proxy may add a line of its own rather than append). IPv4
addresses mapped into IPv6 (a dual-stack listener's `::ffff:10.0.0.2`) are IPv4. Pure:
headers in, an address out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: `for=` in an RFC 7239 `Forwarded` element: a token, or a quoted string (IPv6 in brackets).
_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for=(?:"([^"]*)"|([^;,\s]*))', re.IGNORECASE)
#: A client address that could not be read at all.
UNKNOWN = "unknown"


def _address(raw: str) -> str | None:
    """`1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443` or `2001:db8::1` -> the address."""
    text = raw.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if ip.version == 6 else None
    return (mapped or ip).compressed


class ClientAddresses:
    def __init__(self, trusted: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(t, strict=False) for t in trusted
        )
        self.header = header.lower()

    def is_trusted(self, address: str | None) -> bool:
        if not address or not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address for a request from `peer` with these headers."""
        peer_address = _address(peer) if peer else None
        if peer_address is None:
            return UNKNOWN
        if not self.is_trusted(peer_address):
            return peer_address
        hops = self._hops(headers)
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return peer_address  # a hop we cannot read: do not trust what is left of it
            if not self.is_trusted(address):
                return address
        # every hop is a trusted proxy: the request began inside; the first hop is the client
        first = _address(hops[0]) if hops else None
        return first or peer_address

    def _hops(self, headers: Mapping[str, str]) -> list[str]:
        """Addresses in the order the proxies appended them (left = nearest the client)."""
        getall = getattr(headers, "getall", None)
        name = "Forwarded" if self.header == "forwarded" else "X-Forwarded-For"
        lines = getall(name, []) if getall is not None else [headers.get(name, "")]
        value = ",".join(line for line in lines if line)
        if name == "Forwarded":
            return [m.group(1) or m.group(2) for m in _FORWARDED_FOR.finditer(value)]
        return [part for part in (p.strip() for p in value.split(",")) if part]
