"""Parsers for environment values, shared by the server's settings and the providers'
declarations (`pipelines.provider_spec`), so both validate the same way.

Each takes the raw string and returns the value, or raises `ValueError` with a message
that reads well after the variable's name (`PORT='70000': must be between 1 and 65535`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def text(raw: str) -> str:
    return raw.strip()


def _between(convert: Callable[[str], N], lo: N, hi: N) -> Callable[[str], N]:
    def parse(raw: str) -> N:
        value = convert(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    return _between(int, lo, hi)


def float_between(lo: float, hi: float) -> Callable[[str], float]:
    return _between(float, lo, hi)


def boolean(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def http_url(raw: str) -> str:
    """Empty (the provider's public endpoint) or an http(s) URL with a host."""
    value = raw.strip()
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise ValueError("must be an http:// or https:// URL")
    return value
