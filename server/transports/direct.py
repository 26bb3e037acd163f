"""Audio frames straight from the WebSocket parser to the Session, without a task wakeup.

With a plain `WebSocketResponse` every 20 ms audio frame of every session goes: parser ->
message queue -> resolve the waiting future -> schedule the handler task -> resume three
coroutines (`_receive_loop`, `receive`, `read`) -> `Session.feed_audio`. Most of that is
bookkeeping, paid 50 times a second per session. `DirectAudioResponse` gives the parser a
queue whose `feed_data` hands a binary message to a sink right away when the receive loop
is parked waiting and nothing is queued before it, so order is kept: text messages, and
any audio that arrives while the loop is busy with one, still go through the queue.

This builds on aiohttp internals (`_post_start`, `WebSocketDataQueue`, `WebSocketReader`)
as of aiohttp 3.14, the version it was written and tested against; `available()` checks
them, and on any other version the transport uses the plain response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

try:
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE

    _IMPORTED = True
except ImportError:  # pragma: no cover - another aiohttp layout
    _IMPORTED = False

_BINARY = WSMsgType.BINARY
_TESTED = ((3, 14),)


def available() -> bool:
    version = tuple(int(p) for p in aiohttp.__version__.split(".")[:2] if p.isdigit())
    return (
        _IMPORTED
        and version in _TESTED
        and hasattr(web.WebSocketResponse, "_post_start")
        and hasattr(web.WebSocketResponse, "_on_data_received")
    )


if _IMPORTED:

    class _DirectQueue(WebSocketDataQueue):  # type: ignore[misc,valid-type]
        """The parser's message queue, with a shortcut for audio."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            #: Takes a binary message's payload; returns False to leave it to the queue.
            self.sink: Callable[[bytes], bool] | None = None
            #: The receive loop is awaiting the next message (so nothing is in flight).
            self.parked = False

        def feed_data(self, data: Any, size: int) -> None:
            sink = self.sink
            if sink is not None and self.parked and data[0] is _BINARY and not self._buffer:
                try:
                    if sink(data[1]):
                        return
                except Exception as exc:  # a failing session ends its connection
                    log.exception("audio sink failed")
                    self.sink = None
                    self.set_exception(exc)
                    return
            super().feed_data(data, size)


class DirectAudioResponse(web.WebSocketResponse):
    """A WebSocketResponse whose binary messages can bypass the receive loop."""

    direct: Any = None

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        queue = _DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
        self._reader = queue
        self.direct = queue
        self._parser = WebSocketReader(
            queue,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
        )
        cb = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=cb)
        request.protocol.keep_alive(False)
