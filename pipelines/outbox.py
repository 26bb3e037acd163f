"""The bounded, ordered queue between a Session and its transport's sender.

Control events never wait (the audio hot path emits them); if a client stops reading so
long that they pile up past `max_events`, the outbox is marked overflowed and the
transport closes the connection. Audio frames wait for room (back-pressure on the reply
task only), and a barge-in drops the queued audio of the interrupted turn at once.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pipelines.events import AudioFrame, Event


class Outbox:
    def __init__(self, max_audio: int = 16, max_events: int = 512) -> None:
        self._items: deque[Event] = deque()
        self._audio = 0
        self._max_audio = max_audio
        self._max_events = max_events
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._taken = asyncio.Event()
        self.overflowed = False
        self.dropped_audio = 0

    def __len__(self) -> int:
        return len(self._items)

    def emit(self, event: Event) -> None:
        if len(self._items) - self._audio >= self._max_events:
            self.overflowed = True
            self._readable.set()  # wake the sender so it notices
            return
        self._items.append(event)
        self._readable.set()

    async def emit_audio(self, frame: AudioFrame) -> None:
        while self._audio >= self._max_audio:
            self._room.clear()
            await self._room.wait()
        self._items.append(frame)
        self._audio += 1
        self._readable.set()

    def drop_audio(self, turn_id: int) -> int:
        """Remove queued audio of `turn_id`; returns how many frames were dropped."""
        kept: deque[Event] = deque()
        dropped = 0
        for item in self._items:
            if isinstance(item, AudioFrame) and item.turn_id == turn_id:
                dropped += 1
            else:
                kept.append(item)
        if dropped:
            self._items = kept
            self._audio -= dropped
            self.dropped_audio += dropped
            self._room.set()
        return dropped

    async def wait_empty(self) -> None:
        """Wait until the sender has taken everything queued (bound it with a timeout)."""
        while self._items:
            self._taken.clear()
            await self._taken.wait()

    async def get(self) -> Event:
        while not self._items:
            if self.overflowed:
                raise OutboxOverflow
            self._readable.clear()
            await self._readable.wait()
        if self.overflowed:
            raise OutboxOverflow
        item = self._items.popleft()
        self._taken.set()
        if isinstance(item, AudioFrame):
            self._audio -= 1
            self._room.set()
        return item


class OutboxOverflow(Exception):
    """The client stopped reading: too many undelivered events."""
