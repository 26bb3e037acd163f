"""Build the process's `Identity` from settings (start-up errors name the variable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from server.identity import secret
from server.identity.learners import Identity
from server.identity.oidc import OidcVerifier
from server.identity.tokens import LearnerTokens
from server.settings import ConfigError, Settings

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def secret_path(settings: Settings) -> Path:
    if settings.auth_secret_file:
        return Path(settings.auth_secret_file)
    db = Path(settings.database_path)
    return (db.resolve().parent if db.parent != Path() else Path("data")) / "auth_secret"


def build_identity(settings: Settings, is_forgotten: Callable[[str], Awaitable[bool]]) -> Identity:
    try:
        key = secret.load_or_create(settings.auth_secret, secret_path(settings))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tokens = LearnerTokens(key, settings.learner_token_ttl_days * 86400)
    return Identity(tokens, key, is_forgotten, oidc_verifier(settings))


def oidc_verifier(settings: Settings) -> OidcVerifier | None:
    values = {
        "OIDC_ISSUER": settings.oidc_issuer,
        "OIDC_AUDIENCE": settings.oidc_audience,
        "OIDC_JWKS_URL": settings.oidc_jwks_url,
    }
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set with the other OIDC_* settings")
    url = urlsplit(settings.oidc_jwks_url)
    if url.scheme != "https" and not (url.scheme == "http" and url.hostname in _LOOPBACK):
        raise ConfigError("OIDC_JWKS_URL must be an https URL (http only on loopback)")
    return OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)
