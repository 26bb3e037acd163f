"""Which web pages may open a voice connection: the browser's `Origin` header.

A page on another site can open a WebSocket to this server from its visitors' browsers
(WebSockets are not bound by the same-origin policy). By default only the server's own
origin may: the Origin's host must be the Host the request was sent to (TLS ended at a
proxy or not, so the scheme is not compared), or PUBLIC_URL's. ALLOWED_ORIGINS names
others, or `*` for any. A request without Origin is not from a browser page (a script,
the load generator, Twilio) and is not refused here: its credential decides.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:  # e.g. `http://[`: not an origin at all
        return ""


def origin_allowed(
    origin: str | None, host: str, allowed: tuple[str, ...], public_url: str = ""
) -> bool:
    if origin is None:
        return True
    if "*" in allowed:
        return True
    value = origin.strip().rstrip("/").lower()
    if value in allowed:
        return True
    netloc = _netloc(value)
    if not netloc or value == "null":  # sandboxed frames and file:// pages say "null"
        return False
    return netloc == host.lower() or bool(public_url and netloc == _netloc(public_url))
