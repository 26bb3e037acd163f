"""Bearer tokens from a deployment's identity provider (OIDC / JWT), verified locally.

The provider's signing keys come from its JWKS URL, cached; a token signed with a key id we
have not seen makes us fetch the set again (key rotation), at most once per
`min_refetch_s` so a flood of forged key ids cannot turn us into a load generator against
the provider. Only asymmetric algorithms are accepted: an HS256 token "signed" with the
provider's public key, or `alg: none`, is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt

from server.identity.errors import CredentialError
from server.identity.tokens import check_shape, decode_claims, subject

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
#: Which algorithms a key of each JWK type may verify (a token names its algorithm and its
#: key separately; the two must fit, or PyJWT is handed a key it cannot use).
KEY_ALGORITHMS = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
MAX_JWKS_BYTES = 256 * 1024

#: Fetches the JWKS document (a URL in, parsed JSON out); tests may pass their own.
Fetch = Callable[[str], Awaitable[dict[str, Any]]]


async def fetch_json(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=client_timeout) as http, http.get(url) as response:
        response.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            chunks.append(chunk)
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict):
        raise ValueError("JWKS document is not an object")
    return doc


def learner_id_for(issuer: str, sub: str) -> str:
    """A stable learner id for a provider's subject (ids stay short and in our charset)."""
    return "oidc_" + hashlib.sha256(f"{issuer}\n{sub}".encode()).hexdigest()[:32]


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        fetch: Fetch = fetch_json,
        min_refetch_s: float = 30.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self._fetch = fetch
        self._min_refetch = min_refetch_s
        self._max_age = max_age_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._last_fetch_ok = False
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> str:
        """The learner id for the token's subject, or CredentialError."""
        check_shape(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CredentialError("invalid_token", "the credential is malformed") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise CredentialError("invalid_token", "the credential's algorithm is not accepted")
        key = await self._key(header.get("kid"))
        if not alg.startswith(KEY_ALGORITHMS.get(key.key_type, ())):
            raise CredentialError(
                "invalid_token", "the credential's algorithm does not fit its key"
            )
        claims = decode_claims(
            token, key.key, alg, audience=self.audience, issuer=self.issuer, now=self._clock()
        )
        return learner_id_for(self.issuer, subject(claims))

    async def _key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise CredentialError("invalid_token", "the credential names no signing key")
        stale = self._clock() - self._fetched_at > self._max_age
        if kid not in self._keys or stale:
            await self._refresh(force=stale)
        key = self._keys.get(kid)
        if key is None:
            if not self._last_fetch_ok:  # maybe a new key we could not fetch: not their fault
                raise CredentialError(
                    "identity_provider_unavailable", "the credential cannot be checked now"
                )
            raise CredentialError("invalid_token", "the credential's signing key is unknown")
        return key

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            if not force and self._clock() - self._fetched_at < self._min_refetch:
                return
            self._fetched_at = self._clock()
            try:
                doc = await self._fetch(self.jwks_url)
                keys = jwt.PyJWKSet.from_dict(doc).keys
            except Exception as exc:
                log.warning("could not fetch the identity provider's keys: %s", type(exc).__name__)
                self._last_fetch_ok = False
                return  # the keys we have stay in use
            self._last_fetch_ok = True
            self._keys = {k.key_id: k for k in keys if k.key_id}
