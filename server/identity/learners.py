"""From a credential (or a caller's number) to a learner id.

Learner ids are opaque, at most 64 characters of [A-Za-z0-9_-], and say where they came
from: `anon_...` (issued by this server to a browser or script), `oidc_...` (a subject of
the deployment's identity provider, hashed with its issuer), `phone_...` (a keyed hash of
the caller's number: the number itself is never stored or logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.identity.errors import CredentialError
from server.identity.oidc import OidcVerifier
from server.identity.tokens import LearnerTokens

log = logging.getLogger(__name__)

LEARNER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: How long "not forgotten" is believed without asking the store again (per process).
FORGOTTEN_CACHE_S = 5.0


@dataclass(frozen=True, slots=True)
class Learner:
    id: str
    #: A credential issued just now (a new anonymous learner): the client must keep it.
    issued_token: str | None = None


class Identity:
    def __init__(
        self,
        tokens: LearnerTokens,
        secret: bytes,
        is_forgotten: Callable[[str], Awaitable[bool]],
        oidc: OidcVerifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens
        self.oidc = oidc
        self._secret = secret
        self._phone_key = self.derived_key("phone-number-key")
        self._is_forgotten = is_forgotten
        self._clock = clock
        self._known_live: dict[str, float] = {}
        self._forgotten: set[str] = set()

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for one use of the server secret (number hashes, stream
        tokens, ...): what one use reveals or signs is worth nothing to another."""
        return hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest()

    def new_anonymous(self) -> Learner:
        learner_id = "anon_" + secrets.token_hex(12)
        return Learner(learner_id, self.tokens.issue(learner_id))

    def caller(self, number: str) -> Learner:
        """The learner behind a phone number (the same number, the same learner)."""
        digits = "".join(ch for ch in number if ch.isdigit() or ch == "+")
        digest = hmac.new(self._phone_key, digits.encode(), hashlib.sha256).hexdigest()
        return Learner("phone_" + digest[:32])

    async def verify(self, credential: str) -> Learner:
        """The learner a bearer credential names; CredentialError if it is not valid."""
        if self.oidc is not None and not self.tokens.is_ours(credential):
            learner_id = await self.oidc.verify(credential)
        else:
            learner_id = self.tokens.verify(credential)
        if not LEARNER_ID.fullmatch(learner_id):
            raise CredentialError("invalid_token", "the credential names no valid learner")
        if await self.forgotten(learner_id):
            raise CredentialError("learner_forgotten", "this learner's data has been deleted")
        return Learner(learner_id)

    async def forgotten(self, learner_id: str) -> bool:
        if learner_id in self._forgotten:
            return True
        now = self._clock()
        if now - self._known_live.get(learner_id, float("-inf")) < FORGOTTEN_CACHE_S:
            return False
        try:
            gone = await self._is_forgotten(learner_id)
        except Exception as exc:  # the store is down: its writes drop a forgotten learner's data
            log.warning("could not check for a forgotten learner: %s", type(exc).__name__)
            return False
        if gone:
            self._forgotten.add(learner_id)
        else:
            if len(self._known_live) > 100_000:
                self._known_live.clear()
            self._known_live[learner_id] = now
        return gone

    def forget(self, learner_id: str) -> None:
        """This process deleted the learner: refuse their credentials at once."""
        self._forgotten.add(learner_id)
        self._known_live.pop(learner_id, None)
