"""Per-call stream tokens: a phone stream is opened once, by the call it was made for.

Twilio signs the stream's WebSocket upgrade over the stream URL alone, so one captured
`X-Twilio-Signature` would open any number of streams naming any `callSid`. Instead, the
answer to `POST /twilio/voice` (whose signature covers the call's own parameters) carries a
token in the Stream's `<Parameter>`s; Twilio hands it back in `start.customParameters`, and
the stream is admitted only if the token

- was signed by this server (HMAC-SHA-256 under a key derived from the server secret:
  `AUTH_SECRET` or its generated file, which always exists and is shared by every worker,
  unlike `TWILIO_AUTH_TOKEN`, which is empty when signature checks are off);
- names the `callSid` of the `start` (a token of call A does not open call B);
- has not expired (`TWILIO_STREAM_TOKEN_TTL_SECONDS`: Twilio opens the stream at once);
- has never opened a stream before (`UsedTokens`: in Redis when `REDIS_URL` is set, so a
  replay to another worker or instance is refused too; else in this process).

`StreamTokens` is the pure part (issue, check); `StreamGate` adds the single-use record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

#: The Stream `<Parameter>` name that carries the token.
TOKEN_PARAM = "streamToken"
#: What the token's MAC is computed under, derived from the server secret.
KEY_PURPOSE = "twilio-stream-token"
_VERSION = "v1"
_NONCE_BYTES = 12
#: Longer than any token we issue: anything longer is not ours and is not parsed.
MAX_TOKEN_CHARS = 128


class TokenRefused(Exception):
    """Why a stream token does not open a stream; `code` is short, for logs and close."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ValidToken:
    """A token that is ours, of this call and unexpired (not yet known to be unused)."""

    nonce: str
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class StreamTokens:
    """Issues and checks tokens; pure apart from the clock (tests pass their own)."""

    def __init__(
        self, key: bytes, ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        # Wall-clock time: a token issued by one instance is checked by another.
        self._key = key
        self.ttl_seconds = int(ttl_seconds)
        self._clock = clock

    def issue(self, call_sid: str) -> str:
        expires_at = int(self._clock()) + self.ttl_seconds
        nonce = _b64(secrets.token_bytes(_NONCE_BYTES))
        return f"{_VERSION}.{expires_at}.{nonce}.{self._mac(call_sid, expires_at, nonce)}"

    def check(self, token: object, call_sid: str) -> ValidToken:
        """The token's nonce and expiry if it opens `call_sid`'s stream, else TokenRefused."""
        if not isinstance(token, str) or not token:
            raise TokenRefused("token_missing", "the stream's start carries no token")
        parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            raise TokenRefused("token_malformed", "the stream token is not one of ours")
        _, expiry, nonce, mac = parts
        expires_at = int(expiry)
        if not hmac.compare_digest(mac, self._mac(call_sid, expires_at, nonce)):
            raise TokenRefused(
                "token_invalid", "the stream token was not issued by this server for this call"
            )
        if self._clock() >= expires_at:
            raise TokenRefused("token_expired", "the stream token has expired")
        return ValidToken(nonce, expires_at)

    def _mac(self, call_sid: str, expires_at: int, nonce: str) -> str:
        message = f"{_VERSION}\n{call_sid}\n{expires_at}\n{nonce}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())


class UsedTokens(Protocol):
    async def claim(self, nonce: str, expires_at: int) -> bool:
        """True the first time a token is claimed (until it expires), False after."""
        ...


class MemoryUsedTokens:
    """Tokens used in this process, each kept until it expires; at most `max_entries`.

    Full of unexpired tokens (more calls within one token lifetime than a process can
    hold), it refuses new ones rather than forget a token that could still be replayed."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._used: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._used)

    async def claim(self, nonce: str, expires_at: int) -> bool:
        return self.claim_now(nonce, expires_at)

    def claim_now(self, nonce: str, expires_at: int) -> bool:
        now = self._clock()
        if nonce in self._used and self._used[nonce] > now:
            return False
        if len(self._used) >= self._max:
            self._used = {n: t for n, t in self._used.items() if t > now}
            if len(self._used) >= self._max:
                log.warning("stream token record full: refusing new streams until some expire")
                return False
        self._used[nonce] = expires_at
        return True


class RedisUsedTokens:
    """Tokens used anywhere: `SET <prefix>twilio:stream-token:<nonce> NX EX <ttl>`.

    Every claim is also recorded in this process first, so a replay to this process is
    refused even while Redis is unreachable; then only a replay to another instance within
    the token's lifetime could get through, which is logged."""

    def __init__(
        self, client: Redis, key_prefix: str = "", local: MemoryUsedTokens | None = None
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._local = local or MemoryUsedTokens()

    def key(self, nonce: str) -> str:
        return f"{self._prefix}twilio:stream-token:{nonce}"

    async def claim(self, nonce: str, expires_at: int) -> bool:
        if not self._local.claim_now(nonce, expires_at):
            return False
        ttl = max(1, math.ceil(expires_at - time.time()))
        try:
            first = await self._redis.set(self.key(nonce), "1", nx=True, ex=ttl)
        except Exception as exc:  # Redis away: the local record alone decides
            log.warning("stream token record in Redis unavailable: %s", type(exc).__name__)
            return True
        return bool(first)


class StreamGate:
    """Admits a stream's `start`: its token must be valid for the call and unused."""

    def __init__(self, tokens: StreamTokens, used: UsedTokens) -> None:
        self.tokens = tokens
        self.used = used

    def issue(self, call_sid: str) -> str:
        return self.tokens.issue(call_sid)

    async def admit(self, token: object, call_sid: str) -> None:
        """Return if the stream may open; TokenRefused (with the reason) if not."""
        valid = self.tokens.check(token, call_sid)
        if not await self.used.claim(valid.nonce, valid.expires_at):
            raise TokenRefused("token_used", "the stream token has already opened a stream")


def build_gate(
    key: bytes, ttl_seconds: int, redis_client: Redis | None = None, key_prefix: str = ""
) -> StreamGate:
    """The process's gate: the used-token record in Redis when there is one."""
    used: UsedTokens = MemoryUsedTokens()
    if redis_client is not None:
        used = RedisUsedTokens(redis_client, key_prefix)
    return StreamGate(StreamTokens(key, ttl_seconds), used)
