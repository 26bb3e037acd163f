"""Fair order for model work: one FIFO per owner (a session); the owner that has used the
model threads least lately goes next.

Each owner's use is the seconds its jobs ran (`charge`), decaying by half every
`half_life` seconds. `pop` takes the next job of the owner with work whose use is least,
ties in round-robin order (an owner served goes to the back of the line). So a session that
uses the model for its own turns now and then goes first whenever a thread is free, however
many other sessions have work queued and however long their jobs run: it waits at most for
the jobs already running. Sessions with backlogs share the rest by time, not by job
count (a half-minute transcription counts for more than a short one). Use decays, so
whoever stops working gets their place back within a few half-lives.

Bounded per owner, with one overflow rule. At most `max_queued` jobs of an owner are in
line. Jobs are either droppable (an interim transcript: a newer one makes it stale) or
not (a final transcript, a sentence of speech: never dropped).

- A droppable job replaces the owner's droppable job still in line (the older one is
  returned as dropped). If there is none and the owner's line is full, it is refused.
- A job that is not droppable, arriving at a full line, first makes room by dropping
  the owner's droppable job in line; if there is none it is held, in order, and joins
  the line as the owner's jobs leave it (back-pressure on that owner alone).

Pure: no threads, no clock of its own (times are passed in), no I/O; the executor locks
around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
J = TypeVar("J")

#: Uses closer than this (seconds of work) are equal: round-robin decides.
_TIE = 1e-3


@dataclass(slots=True)
class _Line(Generic[J]):
    queued: deque[tuple[J, bool]] = field(default_factory=deque)  # (job, droppable)
    held: deque[J] = field(default_factory=deque)


class FairQueue(Generic[K, J]):
    def __init__(self, max_queued: int = 8, half_life: float = 10.0) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        if half_life <= 0:
            raise ValueError("half_life must be positive")
        self.max_queued = max_queued
        self.half_life = half_life
        self._lines: dict[K, _Line[J]] = {}
        #: Seconds of work each owner was charged, decayed up to the time beside it.
        self._use: dict[K, tuple[float, float]] = {}
        #: Owners with queued work, in the order they are served.
        self._turns: deque[K] = deque()
        self._size = 0

    def __len__(self) -> int:
        """Jobs waiting: queued and held."""
        return self._size

    def queued(self, key: K) -> list[J]:
        line = self._lines.get(key)
        return [job for job, _ in line.queued] if line else []

    def held(self, key: K) -> list[J]:
        line = self._lines.get(key)
        return list(line.held) if line else []

    def owners(self) -> list[K]:
        """Owners with queued work, next served first."""
        return list(self._turns)

    def put(self, key: K, job: J, *, droppable: bool = False) -> tuple[bool, list[J]]:
        """Queue `job` for `key`. Returns (accepted, dropped): `accepted` is False only for
        a droppable job refused by a full line; `dropped` are jobs taken out of the line to
        make way (their callers are told the work was skipped)."""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        dropped: list[J] = []
        in_line = bool(line.queued)  # a replaced job keeps its owner's place
        if droppable or len(line.queued) >= self.max_queued:
            old = _take_droppable(line)
            if old is not None:
                dropped.append(old)
                self._size -= 1
        if len(line.queued) < self.max_queued:
            if not in_line:
                self._turns.append(key)
            line.queued.append((job, droppable))
        elif droppable:
            return False, dropped
        else:
            line.held.append(job)
        self._size += 1
        return True, dropped

    def use(self, key: K, now: float) -> float:
        """`key`'s decayed seconds of work at `now`."""
        used, at = self._use.get(key, (0.0, now))
        return used * 0.5 ** (max(0.0, now - at) / self.half_life) if used else 0.0

    def charge(self, key: K, seconds: float, now: float) -> None:
        """`key`'s job ran for `seconds` (told when it ends, at `now`)."""
        self._use[key] = (self.use(key, now) + max(0.0, seconds), now)
        if len(self._use) > 2 * len(self._lines) + 64:
            self._forget_idle_use(now)

    def pop(self, now: float = 0.0) -> tuple[K, J] | None:
        """The next job to run: the owner with work that used least lately, ties in
        round-robin order; None when nothing is queued."""
        if not self._turns:
            return None
        key = self._turns[0]
        if self._use:
            least = self.use(key, now)
            for other in self._turns:
                if least <= _TIE:
                    break
                used = self.use(other, now)
                if used < least - _TIE:
                    key, least = other, used
        self._turns.remove(key)
        line = self._lines[key]
        job, _ = line.queued.popleft()
        self._size -= 1
        if line.held:
            line.queued.append((line.held.popleft(), False))
        if line.queued:
            self._turns.append(key)
        else:
            del self._lines[key]
        return key, job

    def remove(self, key: K, job: J) -> bool:
        """Take `job` out (its caller gave up); False if it is not waiting (it already
        ran, or is running)."""
        line = self._lines.get(key)
        if line is None:
            return False
        for i, (queued, _) in enumerate(line.queued):
            if queued is job:
                del line.queued[i]
                break
        else:
            for i, held in enumerate(line.held):
                if held is job:
                    del line.held[i]
                    self._size -= 1
                    return True
            return False
        self._size -= 1
        if line.held:
            line.queued.append((line.held.popleft(), False))
        if not line.queued:
            self._turns.remove(key)
        self._forget_if_idle(key, line)
        return True

    def drain(self) -> list[J]:
        """Everything waiting, in no particular order; the queue is left empty."""
        jobs = [job for line in self._lines.values() for job, _ in line.queued]
        jobs += [job for line in self._lines.values() for job in line.held]
        self._lines.clear()
        self._turns.clear()
        self._size = 0
        return jobs

    def _forget_idle_use(self, now: float) -> None:
        """Owners without work whose use has decayed to nothing are forgotten (a session
        that ended, or has been quiet for minutes)."""
        for key in [k for k in self._use if k not in self._lines and self.use(k, now) < _TIE]:
            del self._use[key]

    def _forget_if_idle(self, key: K, line: _Line[J]) -> None:
        if not line.queued and not line.held:
            del self._lines[key]


def _take_droppable(line: _Line[J]) -> J | None:
    for i, (job, droppable) in enumerate(line.queued):
        if droppable:
            del line.queued[i]
            return job
    return None
