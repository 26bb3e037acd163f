"""Who is asking, over HTTP: `Authorization: Bearer <learner token>`.

Routes call `learner_of(request)`; a bad credential is a 401 JSON error (a 503 when the
identity provider's keys cannot be fetched), never a 500, and never echoes the credential.
A learner over HTTP_PER_MINUTE_PER_LEARNER gets 429 `rate_limited`, whatever its address.
"""

from __future__ import annotations

import re

from aiohttp import web

from server.appkeys import IDENTITY, LIMITS
from server.http_errors import ApiError
from server.identity.errors import CredentialError
from server.identity.learners import Learner
from server.limits.http import within

_BEARER = re.compile(r"^Bearer[ ]+([A-Za-z0-9._~+/=-]+)$", re.IGNORECASE)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="learning-voice-agent"'}


def credential_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    found = _BEARER.fullmatch(header.strip())
    if found is None:
        raise ApiError(
            401, "invalid_credential", "Authorization must be `Bearer <token>`", **_CHALLENGE
        )
    return found.group(1)


async def learner_of(request: web.Request, *, create: bool = False) -> Learner:
    """The caller's learner. `create`: a caller without a credential becomes a new
    anonymous learner (its token is in `Learner.issued_token`, for the response)."""
    identity = request.app[IDENTITY]
    token = credential_of(request)
    if token is None:
        if create:
            await within(request.app[LIMITS].new_learner(request.remote or "unknown"))
            return identity.new_anonymous()
        raise ApiError(
            401,
            "missing_credential",
            "send `Authorization: Bearer <learner token>` (POST /api/learners issues one)",
            **_CHALLENGE,
        )
    try:
        learner = await identity.verify(token)
    except CredentialError as exc:
        if exc.code == "identity_provider_unavailable":
            raise ApiError(503, exc.code, str(exc), **{"Retry-After": "5"}) from None
        raise ApiError(401, exc.code, str(exc), **_CHALLENGE) from None
    await within(request.app[LIMITS].learner_request(learner.id))
    return learner
