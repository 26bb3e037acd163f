"""Who may have a session: the lifecycle's `Authority`, from credentials and ownership.

A credential names the learner (a bad one is refused, 4401); no credential makes a new
anonymous learner; a caller's number makes the phone learner. The session id is then
claimed for that learner: a session that belongs to someone else is refused exactly like
one that does not exist could not be (4404), so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from server.identity.errors import CredentialError
from server.identity.learners import Identity, Learner
from server.transports.base import (
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    Admission,
    Refusal,
    Refused,
)

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 5.0


class SessionClaims(Protocol):
    async def claim_session(self, session_id: str, learner_id: str) -> str: ...


class ContextProbe(Protocol):
    async def exists(self, session_id: str) -> bool:
        """Whether the session has context; raises if the store cannot say."""
        ...


class SessionAuthority:
    def __init__(self, identity: Identity, claims: SessionClaims, context: ContextProbe) -> None:
        self._identity = identity
        self._claims = claims
        self._context = context

    async def admit(self, session_id: str, credential: str | None, caller: str | None) -> Admission:
        learner = await self._learner(credential, caller)
        owner = await self._claim(session_id, learner)
        if owner != learner.id:
            raise Refused(Refusal("session not found", CLOSE_NOT_FOUND, "session_not_found"))
        return Admission(learner.id, learner.issued_token)

    async def _learner(self, credential: str | None, caller: str | None) -> Learner:
        identity = self._identity
        if credential is None:
            return identity.caller(caller) if caller else identity.new_anonymous()
        try:
            return await identity.verify(credential)
        except CredentialError as exc:
            unavailable = exc.code == "identity_provider_unavailable"
            code = CLOSE_UNAVAILABLE if unavailable else CLOSE_UNAUTHORIZED
            raise Refused(Refusal(str(exc), code, exc.code)) from None

    async def _claim(self, session_id: str, learner: Learner) -> str:
        """The session's owner. With the capture store down, a session nobody has talked
        in (no context) is the learner's for now: its captures claim it when written, and
        are dropped if someone else's claim got there first. Anything else is refused."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                return await self._claims.claim_session(session_id, learner.id)
        except Exception as exc:  # the capture store is down (any driver's error type)
            log.warning("cannot claim the session: %s", type(exc).__name__)
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                if not await self._context.exists(session_id):
                    return learner.id
        except Exception as exc:  # neither store can tell whose it is: refuse
            log.warning("cannot check the session's context: %s", type(exc).__name__)
        raise Refused(Refusal("storage unavailable", CLOSE_UNAVAILABLE, "storage_unavailable"))
