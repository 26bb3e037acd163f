"""Builds the limits from settings: shared in Redis when REDIS_URL is set, else per process."""

from __future__ import annotations

from collections.abc import Callable

from server.limits.policy import Limits
from server.limits.settings import LimitSettings
from server.limits.store import LimitStore, LocalStore, RedisStore


def build_limits(
    settings: LimitSettings,
    redis_url: str,
    key_prefix: str,
    on_limited: Callable[[str], None],
) -> Limits:
    store: LimitStore = RedisStore.from_url(redis_url, key_prefix) if redis_url else LocalStore()
    return Limits(settings, store, on_limited)
