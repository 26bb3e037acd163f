"""The real-time clock of all callers: one 20 ms frame per caller every 20 ms.

Callers are spread over `slots` evenly spaced phases of the 20 ms period, as real callers
are not in step with each other, so the server gets a smooth stream rather than a burst
of every session's frame at once. Ticks are scheduled on absolute times: a late tick is
followed at once by the next ones, so every caller still sends exactly 50 frames a second
on average, and how late each frame left is recorded (`lateness`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from loadtest.accounting import LatenessHistogram

FRAME_S = 0.02


class Sender(Protocol):
    def send_frame(self) -> None: ...


class Pacer:
    def __init__(self, slots: int = 10) -> None:
        self.slots: list[list[Sender]] = [[] for _ in range(slots)]
        self.lateness = LatenessHistogram()
        self.ticks = 0
        self._stop = asyncio.Event()

    def add(self, caller: Sender) -> None:
        min(self.slots, key=len).append(caller)

    def remove(self, caller: Sender) -> None:
        for slot in self.slots:
            if caller in slot:
                slot.remove(caller)

    def reset_stats(self) -> None:
        self.lateness = LatenessHistogram()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        clock = time.monotonic
        n = len(self.slots)
        period = FRAME_S / n
        t0 = clock()
        k = 0
        while not self._stop.is_set():
            due = t0 + k * period
            delay = due - clock()
            await asyncio.sleep(delay if delay > 0 else 0)  # always let replies in
            slot = self.slots[k % n]
            for caller in slot:
                caller.send_frame()
            if slot:
                late = clock() - due  # when the slot's last frame left: an upper bound
                hist = self.lateness
                for _ in slot:
                    hist.add(late)
            k += 1
            self.ticks = k
