"""Learner credentials: the server's own tokens, an identity provider's tokens verified
with its JWKS (served on loopback, signed with keys made here), the signing secret, and
the learner ids derived from them. Every bad credential is a CredentialError, never a crash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.identity import secret as secret_file
from server.identity.errors import CredentialError
from server.identity.learners import Identity
from server.identity.oidc import OidcVerifier, fetch_json, learner_id_for
from server.identity.tokens import AUDIENCE, ISSUER, LearnerTokens

SECRET = b"s" * 48
ISS, AUD = "https://id.example.test/", "voice-agent"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- the server's own tokens ---------------------------------------------------------
def test_a_token_names_its_learner_until_it_expires() -> None:
    clock = Clock()
    tokens = LearnerTokens(SECRET, ttl_seconds=3600, clock=clock)
    token = tokens.issue("anon_abc")
    assert tokens.verify(token) == "anon_abc"
    clock.now += 3600 + 31
    with pytest.raises(CredentialError) as info:
        tokens.verify(token)
    assert info.value.code == "token_expired"


@pytest.mark.parametrize(
    "forge",
    [
        lambda: jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40},
                           b"another-secret-of-enough-length-000", algorithm="HS256"),
        lambda: jwt.encode({"sub": "x", "iss": ISSUER, "aud": "other", "iat": 1, "exp": 2**40},
                           SECRET, algorithm="HS256"),
        lambda: jwt.encode({"sub": "x", "iss": "elsewhere", "aud": AUDIENCE, "iat": 1,
                            "exp": 2**40}, SECRET, algorithm="HS256"),
        lambda: jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "iat": 1},
                           SECRET, algorithm="HS256"),  # no expiry
        lambda: b64({"alg": "none", "typ": "JWT"}) + "."
        + b64({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40}) + ".",
        lambda: jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40},
                           SECRET * 2, algorithm="HS512"),
        lambda: "not-a-token",
        lambda: "a.b.c",
        lambda: "",
        lambda: "x" * 10_000,
    ],
    ids=["wrong-secret", "wrong-audience", "wrong-issuer", "no-expiry", "alg-none", "hs512",
         "garbage", "three-dots", "empty", "huge"],
)  # fmt: skip
def test_forged_and_malformed_tokens_are_refused(forge) -> None:
    tokens = LearnerTokens(SECRET, ttl_seconds=3600)
    token = forge()
    with pytest.raises(CredentialError) as info:
        tokens.verify(token)
    assert info.value.code == "invalid_token"
    assert token[:40] not in str(info.value) or not token


def test_a_tampered_payload_breaks_the_signature() -> None:
    tokens = LearnerTokens(SECRET, ttl_seconds=3600)
    head, _, sig = tokens.issue("anon_a").split(".")
    body = b64({"sub": "anon_b", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40})
    forged = f"{head}.{body}.{sig}"
    with pytest.raises(CredentialError):
        tokens.verify(forged)


# --- the signing secret ----------------------------------------------------------------
def test_the_generated_secret_is_private_and_shared_by_every_worker(tmp_path: Path) -> None:
    path = tmp_path / "state" / "auth_secret"
    first = secret_file.load_or_create("", path)
    assert len(first) >= 32 and secret_file.load_or_create("", path) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret_file.load_or_create("c" * 40, path) == b"c" * 40
    with pytest.raises(ValueError, match="AUTH_SECRET"):
        secret_file.load_or_create("short", path)


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    import concurrent.futures

    path = tmp_path / "auth_secret"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        got = set(pool.map(secret_file.load_or_create, [""] * 8, [path] * 8))
    assert len(got) == 1


# --- identity: learner ids ------------------------------------------------------------
async def _never_forgotten(learner_id: str) -> bool:
    return False


async def test_phone_learners_are_stable_keyed_hashes_of_the_number() -> None:
    identity = Identity(LearnerTokens(SECRET, 60), SECRET, _never_forgotten)
    a = identity.caller("+1 (555) 010-2030")
    assert a == identity.caller("+15550102030")
    assert a.id.startswith("phone_") and "5550102030" not in a.id
    other = Identity(LearnerTokens(b"t" * 48, 60), b"t" * 48, _never_forgotten)
    assert other.caller("+15550102030") != a  # keyed: another server's secret, another id


async def test_a_forgotten_learners_token_is_refused() -> None:
    gone: set[str] = set()

    async def is_forgotten(learner_id: str) -> bool:
        return learner_id in gone

    identity = Identity(LearnerTokens(SECRET, 60), SECRET, is_forgotten)
    learner = identity.new_anonymous()
    assert learner.issued_token and (await identity.verify(learner.issued_token)).id == learner.id
    gone.add(learner.id)
    identity.forget(learner.id)
    with pytest.raises(CredentialError) as info:
        await identity.verify(learner.issued_token)
    assert info.value.code == "learner_forgotten"


# --- an identity provider, with its JWKS on loopback ----------------------------------
class Provider:
    """Signs tokens like an OIDC provider and serves its public keys as a JWKS."""

    def __init__(self) -> None:
        self.keys: dict[str, object] = {"k1": rsa.generate_private_key(65537, 2048)}
        self.fetches = 0

    def jwks(self) -> dict:
        out = []
        for kid, key in self.keys.items():
            algo = (
                jwt.algorithms.RSAAlgorithm
                if isinstance(key, rsa.RSAPrivateKey)
                else (jwt.algorithms.ECAlgorithm)
            )
            jwk = json.loads(algo.to_jwk(key.public_key()))  # type: ignore[attr-defined]
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str = "k1", alg: str = "RS256", **claims) -> str:
        now = int(time.time())
        body = {"iss": ISS, "aud": AUD, "sub": "user-42", "iat": now, "exp": now + 600, **claims}
        return jwt.encode(body, self.keys[kid], algorithm=alg, headers={"kid": kid})  # type: ignore[arg-type]


@pytest.fixture
async def idp():
    provider = Provider()

    async def jwks(request: web.Request) -> web.Response:
        provider.fetches += 1
        return web.json_response(provider.jwks())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield provider, f"http://127.0.0.1:{server.port}/jwks"
    finally:
        await server.close()


async def test_provider_tokens_are_verified_with_its_jwks(idp) -> None:
    provider, url = idp
    verifier = OidcVerifier(ISS, AUD, url, fetch=fetch_json)
    assert await verifier.verify(provider.token()) == learner_id_for(ISS, "user-42")
    assert await verifier.verify(provider.token(sub="user-43")) != learner_id_for(ISS, "user-42")
    assert provider.fetches == 1  # cached


async def test_a_rotated_key_is_fetched_once_and_unknown_kids_do_not_flood_the_provider(idp):
    provider, url = idp
    verifier = OidcVerifier(ISS, AUD, url, min_refetch_s=30)
    await verifier.verify(provider.token())
    provider.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    await asyncio.sleep(0)
    verifier._fetched_at -= 31  # the last fetch was over 30 s ago
    assert await verifier.verify(provider.token(kid="k2", alg="ES256"))
    assert provider.fetches == 2
    for i in range(20):
        forged = b64({"alg": "RS256", "kid": f"nope{i}"}) + "." + b64({"sub": "x"}) + ".c2ln"
        with pytest.raises(CredentialError):
            await verifier.verify(forged)
    assert provider.fetches == 2


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"aud": "someone-else"}, "invalid_token"),
        ({"iss": "https://evil.example/"}, "invalid_token"),
        ({"exp": int(time.time()) - 3600}, "token_expired"),
    ],
)
async def test_provider_tokens_for_others_or_expired_are_refused(idp, claims, code) -> None:
    provider, url = idp
    verifier = OidcVerifier(ISS, AUD, url)
    with pytest.raises(CredentialError) as info:
        await verifier.verify(provider.token(**claims))
    assert info.value.code == code


async def test_hs256_signed_with_the_public_key_and_alg_none_are_refused(idp) -> None:
    provider, url = idp
    verifier = OidcVerifier(ISS, AUD, url)
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "mallory", "iat": now, "exp": now + 600}
    public_key = json.dumps(provider.jwks()).encode()
    signing_input = b64({"alg": "HS256", "kid": "k1"}) + "." + b64(claims)
    mac = hmac.new(public_key, signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    unsigned = b64({"alg": "none", "kid": "k1"}) + "." + b64(claims) + "."
    for token in (confused, unsigned):
        with pytest.raises(CredentialError) as info:
            await verifier.verify(token)
        assert info.value.code == "invalid_token"


async def test_an_unreachable_provider_is_a_temporary_failure_not_a_crash() -> None:
    verifier = OidcVerifier(ISS, AUD, "http://127.0.0.1:9/jwks")
    token = b64({"alg": "RS256", "kid": "k1"}) + "." + b64({"sub": "x"}) + ".c2ln"
    with pytest.raises(CredentialError) as info:
        await verifier.verify(token)
    assert info.value.code == "identity_provider_unavailable"


async def test_an_algorithm_that_does_not_fit_the_named_key_is_refused_not_a_crash(idp):
    provider, url = idp
    provider.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    verifier = OidcVerifier(ISS, AUD, url)
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "x", "iat": now, "exp": now + 600}
    # Signed with the EC key but naming the RSA key, and the other way round.
    ec_as_rsa = jwt.encode(claims, provider.keys["k2"], algorithm="ES256", headers={"kid": "k1"})
    rsa_as_ec = jwt.encode(claims, provider.keys["k1"], algorithm="RS256", headers={"kid": "k2"})
    for token in (ec_as_rsa, rsa_as_ec):
        with pytest.raises(CredentialError) as info:
            await verifier.verify(token)
        assert info.value.code == "invalid_token"


async def test_a_provider_that_stays_down_is_unavailable_not_a_bad_token(idp) -> None:
    provider, _ = idp
    down = OidcVerifier(ISS, AUD, "http://127.0.0.1:9/jwks", min_refetch_s=30)
    for _ in range(3):  # the first try, then tries inside the refetch interval
        with pytest.raises(CredentialError) as info:
            await down.verify(provider.token())
        assert info.value.code == "identity_provider_unavailable"


async def test_a_jwks_that_arrives_in_pieces_is_read_whole() -> None:
    provider = Provider()

    async def slow_jwks(request: web.Request) -> web.StreamResponse:
        body = json.dumps(provider.jwks()).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(body), 300):
            await response.write(body[i : i + 300])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/jwks", slow_jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        verifier = OidcVerifier(ISS, AUD, f"http://127.0.0.1:{server.port}/jwks")
        assert await verifier.verify(provider.token()) == learner_id_for(ISS, "user-42")
    finally:
        await server.close()


def test_not_before_in_the_future_is_refused() -> None:
    from server.identity.tokens import check_time

    now = time.time()
    check_time({"exp": now + 60, "iat": now, "nbf": now + 10}, now)  # within the leeway
    with pytest.raises(CredentialError):
        check_time({"exp": now + 600, "iat": now, "nbf": now + 300}, now)
