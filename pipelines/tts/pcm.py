"""HTTP chunks split audio anywhere; PCM16 consumers need whole samples."""

from __future__ import annotations


def aligned(carry: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """(new carry, whole samples): prepend the odd byte kept from the previous chunk and
    keep this chunk's odd byte for the next one."""
    data = carry + chunk if carry else chunk
    if len(data) % 2:
        return data[-1:], data[:-1]
    return b"", data
