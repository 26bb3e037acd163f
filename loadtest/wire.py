"""A minimal RFC 6455 WebSocket client codec, cheap enough to drive hundreds of callers.

A load generator that spends as much CPU per frame as the server it measures cannot tell
the two apart, and the machine it runs on has one core for it. So the audio a caller
sends is framed and masked once, up front (`masked_frame`), and sending a frame is one
`transport.write` of ready bytes. Incoming server frames are parsed incrementally by
`FrameParser`. Only what protocol v1 uses: no extensions, no compression.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_PAYLOAD = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The server broke the WebSocket protocol (or the handshake failed)."""


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(
        n, "little"
    )


def masked_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One complete client frame (FIN set, masked as clients must)."""
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + key + _mask(payload, key)


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return masked_frame(OP_CLOSE, struct.pack("!H", code) + reason)


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, str]:
    """The upgrade request and the Sec-WebSocket-Accept value the server must answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()
    return request, accept


def check_handshake(head: bytes, accept: str) -> None:
    """Raise ProtocolError unless `head` (status line and headers) accepts the upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise ProtocolError(f"upgrade refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept:
        raise ProtocolError("bad Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise ProtocolError("server negotiated an extension we did not offer")


class FrameParser:
    """Incremental parser of server -> client frames: feed bytes, get whole messages.

    `feed` returns a list of (opcode, payload); fragmented messages are reassembled and
    reported with the opcode of their first frame.
    """

    __slots__ = ("_buf", "_frag", "_frag_op")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._frag_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("server frames must not be masked")
            if b0 & 0x70:
                raise ProtocolError("reserved bits set")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if n > _MAX_PAYLOAD:
                raise ProtocolError(f"frame of {n} bytes")
            if end - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._message(b0 & 0x80, b0 & 0x0F, payload, out)
        if pos:
            del buf[:pos]
        return out

    def _message(self, fin: int, opcode: int, payload: bytes, out: list) -> None:
        if opcode >= OP_CLOSE:  # control frames are never fragmented
            out.append((opcode, payload))
        elif opcode == OP_CONT:
            if self._frag is None:
                raise ProtocolError("continuation without a first frame")
            self._frag += payload
            if fin:
                out.append((self._frag_op, bytes(self._frag)))
                self._frag = None
        elif fin:
            out.append((opcode, payload))
        else:
            self._frag, self._frag_op = bytearray(payload), opcode
