"""The secret that signs learner tokens and keys the hash of callers' numbers.

Set `AUTH_SECRET` on a deployment with several instances (they must agree). Unset, the
first process to start writes a random one to a file beside the database, and every other
worker of the host reads the same file: restarts keep learners' credentials valid.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 32


def load_or_create(configured: str, path: Path) -> bytes:
    if configured:
        if len(configured) < MIN_SECRET_CHARS:
            raise ValueError(f"AUTH_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return configured.encode()
    return _from_file(path)


def _from_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    for _ in range(50):  # another worker may be between creating and filling it
        value = path.read_bytes().strip()
        if len(value) >= MIN_SECRET_CHARS:
            return value
        time.sleep(0.02)
    raise ValueError(f"{path} does not hold a usable secret; delete it or set AUTH_SECRET")


def _create(path: Path) -> None:
    """Write the secret to a private temporary file, then link it into place: the file
    appears complete or not at all, and exactly one process's secret wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_urlsafe(48).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        log.info("generated a token signing secret", extra={"path": str(path)})
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
