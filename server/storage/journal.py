"""A bounded, append-only journal of captures on local disk (JSON lines in segments).

Captures go here when the memory queue is full or the database is failing, and leave
only after the database has accepted them. Segment files are replayed oldest first; a
segment is deleted only once every capture in it is written, so a crash during replay
writes some captures twice, which `capture_id` makes harmless (exactly once in the table).

Each process journals into its own slot directory (`slot-N`, held with `flock`), so
instances sharing a disk never replay each other's segments while both are alive; a
starting instance takes a free slot and adopts the segments of every slot no live process
holds, so what a dead one left behind is replayed whichever slot it was in.

Threading: appends happen on the event loop thread (a buffered write is a memcpy; the
OS write happens when the buffer fills); the fsync and the reading of sealed segments run
in worker threads, so the loop never waits on the disk's flush.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipelines.ports import Capture
from server.storage.base import LEGACY_LEARNER

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
MAX_SLOTS = 64


def encode(capture: Capture) -> bytes:
    return json.dumps(dataclasses.asdict(capture), default=str, ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> Capture | None:
    """A capture from one journal line, or None for a torn or foreign line.

    Lines written before captures had learners belong to the legacy learner, like the rows
    the migration found in the database."""
    try:
        raw = json.loads(line)
        return Capture(
            session_id=str(raw["session_id"]),
            user_text=str(raw["user_text"]),
            agent_text=str(raw["agent_text"]),
            timestamp=float(raw["timestamp"]),
            metadata=raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {},
            capture_id=str(raw["capture_id"]),
            learner_id=str(raw.get("learner_id", LEGACY_LEARNER)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_segment(path: Path) -> tuple[list[Capture], int]:
    """Every readable capture in a sealed segment, and its line count (blocking)."""
    out = []
    lines = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            lines += 1
            capture = decode(line)
            if capture is None:
                log.warning("journal: skipping unreadable line", extra={"segment": path.name})
                continue
            out.append(capture)
    return out, lines


def rewrite_segment(path: Path, drop: Callable[[Capture], bool]) -> tuple[int, int]:
    """Blocking: rewrite a sealed segment without the captures `drop` selects.

    Returns (lines removed, bytes removed). The kept lines are copied byte for byte into a
    new file that is fsynced before it replaces the old one (and the directory after), so
    a crash leaves either segment whole, never half of one. Unreadable lines are kept:
    replay skips them as before. A segment left with nothing is deleted."""
    kept: list[bytes] = []
    removed = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            capture = decode(line)
            if capture is not None and drop(capture):
                removed += 1
            else:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
    if not removed:
        return 0, 0
    size = path.stat().st_size
    if not kept:
        path.unlink()
    else:
        tmp = path.with_suffix(".rewrite")
        with tmp.open("wb") as out:
            out.writelines(kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return removed, size - (0 if not kept else path.stat().st_size)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Segments `NNNNNNNNNNNN.jsonl` in one slot directory, bounded by `max_bytes`."""

    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.dir = self.root
        self._lock_fh: IO[bytes] | None = None
        self._tail: IO[bytes] | None = None
        self._tail_path: Path | None = None
        self._next_seq = 0
        self._bytes = 0
        self._sealing: list[IO[bytes]] = []
        self._unsynced: set[str] = set()
        self.entries = 0  # captures in the journal not yet written to the store
        self.disk_error: str | None = None  # why the last append stopped short, if the disk

    # --- lifecycle (blocking: call from a thread at start and stop) ---------------------
    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_SLOTS):
            slot = self.root / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            fh = (slot / ".lock").open("ab")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            self._lock_fh, self.dir = fh, slot
            break
        else:
            raise RuntimeError(f"journal: all {MAX_SLOTS} slots in {self.root} are in use")
        self._adopt_orphans()
        for seg in self.segments():
            self._next_seq = max(self._next_seq, int(seg.stem) + 1)
            self._bytes += seg.stat().st_size
            with seg.open("rb") as fh:
                self.entries += sum(1 for line in fh if line.strip())

    def _adopt_orphans(self) -> None:
        """Move into our slot the segments of every slot no live process holds.

        A restarted process lands on the lowest free slot, which need not be the one a
        dead process left its backlog in (a fleet that shrank leaves several): without
        this, those captures would wait for a process that may never take that slot."""
        own = [int(seg.stem) for seg in self.segments()]
        seq = max(own, default=-1) + 1
        for n in range(MAX_SLOTS):
            slot = self.root / f"slot-{n}"
            if slot == self.dir or not slot.is_dir() or not any(slot.glob("*.jsonl")):
                continue
            with (slot / ".lock").open("ab") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it and replays it itself
                for seg in sorted(slot.glob("*.jsonl")):
                    os.replace(seg, self.dir / f"{seq:012d}.jsonl")
                    seq += 1
                log.info("journal: adopted an orphaned slot", extra={"slot": slot.name})

    def close(self) -> None:
        """Blocking: fsync and close every open segment, then release the slot."""
        self.seal()
        tail_fd, sealed = self.take_sync_work()
        self.fsync(tail_fd, sealed)
        self.synced(sealed)
        for fh in sealed:
            path = Path(fh.name)
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # --- loop-thread operations --------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl"))

    def append(self, captures: list[Capture]) -> int:
        """Write captures at the tail; returns how many fit under `max_bytes` and on the
        disk. A line the disk cannot take (ENOSPC, EIO) is cut off again, so a segment
        never holds half a line, and `disk_error` says why the rest did not fit."""
        written = 0
        self.disk_error = None
        for capture in captures:
            line = encode(capture)
            if self._bytes + len(line) > self.max_bytes:
                break
            at: int | None = None
            try:
                tail = self._open_tail()
                at = tail.tell()
                done = tail.write(line)
                if done != len(line):  # a short write: the disk filled up under it
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                self.disk_error = exc.strerror or repr(exc)
                if self._tail is not None and at is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._tail.fileno(), at)
                        self._tail.seek(at)
                break
            self._bytes += len(line)
            written += 1
            if tail.tell() >= SEGMENT_BYTES:
                self.seal()
        self.entries += written
        return written

    def take_sync_work(self) -> tuple[int | None, list[IO[bytes]]]:
        """What the next fsync must cover: the tail's fd and sealed files to close."""
        sealed, self._sealing = self._sealing, []
        return (None if self._tail is None else self._tail.fileno()), sealed

    @staticmethod
    def fsync(tail_fd: int | None, sealed: list[IO[bytes]]) -> None:
        """Blocking: flush to the device. Run it in a thread."""
        for fh in sealed:
            os.fsync(fh.fileno())
            fh.close()
        if tail_fd is not None:
            try:
                os.fsync(tail_fd)
            except OSError:  # closed by a seal meanwhile: its own fsync covers it
                pass

    def sync_failed(self, sealed: list[IO[bytes]]) -> None:
        """An fsync failed: the sealed files it did not close wait for the next one."""
        self._sealing[:0] = [fh for fh in sealed if not fh.closed]

    def synced(self, sealed: list[IO[bytes]]) -> None:
        for fh in sealed:
            self._unsynced.discard(fh.name)

    def seal(self) -> None:
        """Stop appending to the tail; it becomes replayable once fsynced and closed."""
        if self._tail is None:
            return
        self._tail.flush()
        self._sealing.append(self._tail)
        self._unsynced.add(self._tail.name)
        self._tail = None
        self._tail_path = None

    def oldest_sealed(self) -> Path | None:
        """The oldest segment that is sealed and on disk (never the open tail)."""
        for seg in self.segments():
            if seg == self._tail_path or str(seg) in self._unsynced:
                continue
            return seg
        return None

    def sealed_segments(self) -> list[Path]:
        """Every segment but the open tail (sealed ones may still await their fsync)."""
        return [seg for seg in self.segments() if seg != self._tail_path]

    def shrunk(self, lines: int, nbytes: int) -> None:
        """Account for lines a rewrite_segment call took out."""
        self._bytes -= nbytes
        self.entries = max(0, self.entries - lines)

    def remove(self, segment: Path, count: int) -> None:
        """Forget a fully written segment."""
        size = segment.stat().st_size
        segment.unlink()
        self._bytes -= size
        self.entries = max(0, self.entries - count)
        if self._tail is None and not self._sealing and not self.segments():
            self.entries = 0

    def _open_tail(self) -> IO[bytes]:
        if self._tail is None:
            self._tail_path = self.dir / f"{self._next_seq:012d}.jsonl"
            self._next_seq += 1
            # Unbuffered: a line is on its way to the disk, or refused, when write returns.
            self._tail = self._tail_path.open("ab", buffering=0)
        return self._tail
