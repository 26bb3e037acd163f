"""`env_field`: a settings dataclass field that names its environment variable.

Shared by `server.settings.Settings` and the sections it is built from (for example
`server.limits.settings.LimitSettings`), so every section is read, validated, redacted
and documented the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any


def env_field(name: str, doc: str, parse: Callable[[str], Any] | None = None, **kw: Any) -> Any:
    return field(metadata={"env": name, "doc": doc, "parse": parse}, **kw)
