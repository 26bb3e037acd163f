"""The limits one client may use, each a setting (docs/security.md#limits).

Defaults fit a classroom of about 30 learners behind one NAT address; docs/security.md says
how to tighten them for one learner per address. `make bench` raises the per-address ones
for its load generator, which runs hundreds of sessions from 127.0.0.1, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipelines.env_values import choice as _choice
from pipelines.env_values import float_between as _float
from pipelines.env_values import int_between as _int
from server.env_field import env_field


def cidrs(raw: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (`10.0.0.0/8, 2001:db8::/32`), validated."""
    import ipaddress

    out = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(out)


def origins(raw: str) -> tuple[str, ...]:
    """`*`, or comma-separated origins (`https://app.example.com`)."""
    out = []
    for item in (p.strip().rstrip("/").lower() for p in raw.split(",")):
        if not item:
            continue
        if item != "*" and not item.startswith(("http://", "https://")):
            raise ValueError(f"{item!r} is not an origin (scheme://host[:port]) or *")
        out.append(item)
    return tuple(out)


def _per_minute(hi: int) -> Callable[[str], int]:
    return _int(1, hi)


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # --- the edge ---------------------------------------------------------------------
    trusted_proxies: tuple[str, ...] = env_field(
        "TRUSTED_PROXIES",
        "Proxies (CIDRs) whose X-Forwarded-For / Forwarded header names the client; the "
        "client address is what limits, logs and metrics use. Empty = the peer address.",
        cidrs,
        default=(),
    )
    forwarded_header: str = env_field(
        "FORWARDED_HEADER",
        "The header the trusted proxies write the client's address into: "
        "`x-forwarded-for` or `forwarded` (RFC 7239); the other one is ignored.",
        _choice("x-forwarded-for", "forwarded"),
        default="x-forwarded-for",
    )
    allowed_origins: tuple[str, ...] = env_field(
        "ALLOWED_ORIGINS",
        "Origins allowed to open a browser WebSocket (`*` = any); empty = the server's own "
        "origin only. Clients that send no Origin (scripts) are not browsers and pass.",
        origins,
        default=(),
    )
    # --- connections -------------------------------------------------------------------
    max_sockets_per_address: int = env_field(
        "MAX_SOCKETS_PER_ADDRESS",
        "Concurrent voice connections from one client address (signed phone calls are "
        "limited per call instead); more get close code 4429.",
        _int(1, 100000),
        default=64,
    )
    max_sockets_per_learner: int = env_field(
        "MAX_SOCKETS_PER_LEARNER",
        "Concurrent voice connections of one learner; more get close code 4429.",
        _int(1, 100000),
        default=4,
    )
    connections_per_second: float = env_field(
        "CONNECTIONS_PER_SECOND",
        "New voice connections per second from one client address (sustained rate).",
        _float(0.01, 100000),
        default=5.0,
    )
    connections_burst: int = env_field(
        "CONNECTIONS_BURST",
        "New voice connections one client address may open at once before the rate applies.",
        _int(1, 100000),
        default=40,
    )
    # --- HTTP --------------------------------------------------------------------------
    http_per_minute_per_address: int = env_field(
        "HTTP_PER_MINUTE_PER_ADDRESS",
        "HTTP requests per minute from one client address (token bucket holding a quarter "
        "minute's worth); over it: 429 `rate_limited` with Retry-After.",
        _per_minute(10_000_000),
        default=1200,
    )
    http_per_minute_per_learner: int = env_field(
        "HTTP_PER_MINUTE_PER_LEARNER",
        "HTTP requests per minute by one learner (token bucket holding a quarter minute's worth).",
        _per_minute(10_000_000),
        default=240,
    )
    new_learners_per_minute: int = env_field(
        "NEW_LEARNERS_PER_MINUTE",
        "Anonymous learners one client address may be issued per minute, all of them at "
        "once if need be (`POST /api/learners`, or a typed turn without a credential).",
        _per_minute(100_000),
        default=60,
    )
    conversation_per_minute: int = env_field(
        "CONVERSATION_PER_MINUTE",
        "Typed turns per minute per learner (`POST /api/conversation`, and `text` messages "
        "on a voice connection); turns without a credential count per client address.",
        _per_minute(100_000),
        default=20,
    )
    search_per_minute: int = env_field(
        "SEARCH_PER_MINUTE",
        "Searches of one's captures per minute per learner (each may be a paid embedding).",
        _per_minute(100_000),
        default=30,
    )
    # --- inside a voice connection -------------------------------------------------------
    ws_messages_per_second: float = env_field(
        "WS_MESSAGES_PER_SECOND",
        "Control (text) messages per second on one WebSocket (burst of twice as many); the "
        "excess is dropped with one `rate_limited` error a second.",
        _float(0.1, 100000),
        default=20.0,
    )
    audio_max_speed: float = env_field(
        "AUDIO_MAX_SPEED",
        "Audio is accepted at most this many times faster than real time, sustained; the "
        "excess is dropped and reported once (`audio_too_fast`), the session goes on.",
        _float(1.0, 1000.0),
        default=1.5,
    )
    audio_burst_seconds: float = env_field(
        "AUDIO_BURST_SECONDS",
        "Seconds of audio a client may send ahead of real time at once (network jitter).",
        _float(0.1, 600.0),
        default=3.0,
    )
    llm_context_max_chars: int = env_field(
        "LLM_CONTEXT_MAX_CHARS",
        "Characters of remembered conversation sent to the language model per turn (the "
        "oldest exchanges go first); bounds what one turn can cost.",
        _int(200, 10_000_000),
        default=12000,
    )
    # --- admin ---------------------------------------------------------------------------
    admin_max_failures: int = env_field(
        "ADMIN_MAX_FAILURES",
        "Wrong admin keys or metrics tokens one client address may send per minute before it "
        "waits (doubling each time, at most 15 min); a right key is never refused.",
        _int(1, 100000),
        default=10,
    )
