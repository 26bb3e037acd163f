"""The server's own learner tokens: HS256 JWTs signed with the server secret.

A token names a learner (`sub`), says who issued it and for what (`iss`, `aud`, so a token
from another system signed with a reused secret is still refused), and expires (`exp`).
Only HS256 is accepted: `alg: none` and every other algorithm are refused by PyJWT because
the list of algorithms is given, never read from the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from server.identity.errors import CredentialError

ISSUER = "learning-voice-agent"
AUDIENCE = "learner"
ALGORITHM = "HS256"
#: A credential longer than this is not one of ours (nor a sane identity provider's).
MAX_TOKEN_CHARS = 8192


def check_shape(token: str) -> None:
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise CredentialError("invalid_token", "the credential is not a token")


class LearnerTokens:
    def __init__(
        self, secret: bytes, ttl_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def issue(self, learner_id: str) -> str:
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": learner_id,
            "iat": now,
            "exp": now + int(self._ttl),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def is_ours(self, token: str) -> bool:
        """Whether the token claims to be ours (HS256); says nothing about its validity."""
        try:
            return jwt.get_unverified_header(token).get("alg") == ALGORITHM
        except jwt.PyJWTError:
            return False

    def verify(self, token: str) -> str:
        """The learner id the token names, or CredentialError."""
        check_shape(token)
        claims = decode_claims(
            token, self._secret, ALGORITHM, audience=AUDIENCE, issuer=ISSUER, now=self._clock()
        )
        return subject(claims)


def decode_claims(
    token: str, key: object, algorithm: str, *, audience: str, issuer: str, now: float
) -> dict[str, object]:
    """Verify signature, audience, issuer and times; every failure is a CredentialError
    whose message says what was wrong, never what the token held."""
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            # Times are checked below against the caller's clock (PyJWT would read its own).
            options={
                "require": ["exp", "iat", "sub", "aud", "iss"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise CredentialError("invalid_token", "the credential is not for this server") from None
    except jwt.InvalidSignatureError:
        raise CredentialError("invalid_token", "the credential's signature is wrong") from None
    except (jwt.PyJWTError, TypeError, ValueError):
        # TypeError/ValueError: a key that does not fit the algorithm (PyJWT raises them
        # rather than one of its own errors).
        raise CredentialError("invalid_token", "the credential is malformed") from None
    check_time(claims, now)
    return claims


def check_time(claims: dict[str, object], now: float, leeway: float = 30.0) -> None:
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
    if not all(isinstance(t, int | float) for t in (exp, iat, nbf)):
        raise CredentialError("invalid_token", "the credential has no valid times")
    if exp <= now - leeway:  # type: ignore[operator]
        raise CredentialError("token_expired", "the credential has expired")
    if iat > now + leeway or nbf > now + leeway:  # type: ignore[operator]
        raise CredentialError("invalid_token", "the credential is not valid yet")


def subject(claims: dict[str, object]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise CredentialError("invalid_token", "the credential names no learner")
    return sub
