"""The capture journal on a real directory: segments, torn lines, slots, the size bound."""

from __future__ import annotations

from pathlib import Path

from pipelines.ports import Capture
from server.storage.base import LEGACY_LEARNER
from server.storage.journal import Journal, decode, encode, read_segment


def caps(n: int) -> list[Capture]:
    return [Capture("s", f"u{i} ünï", "a", float(i), {"i": i}, f"id{i}") for i in range(n)]


def sync(j: Journal) -> None:
    fd, sealed = j.take_sync_work()
    Journal.fsync(fd, sealed)
    j.synced(sealed)


def test_round_trip_and_removal(tmp_path: Path) -> None:
    j = Journal(str(tmp_path), max_bytes=10_000_000)
    j.open()
    assert j.append(caps(5)) == 5
    assert j.oldest_sealed() is None  # the open tail is never replayed
    j.seal()
    assert j.oldest_sealed() is None  # sealed but not yet fsynced
    sync(j)
    seg = j.oldest_sealed()
    assert seg is not None
    captures, lines = read_segment(seg)
    assert captures == caps(5) and lines == 5 and j.entries == 5
    j.remove(seg, lines)
    assert j.entries == 0 and j.segments() == []
    j.close()


def test_torn_line_is_skipped_but_counted(tmp_path: Path) -> None:
    j = Journal(str(tmp_path), max_bytes=10_000_000)
    j.open()
    j.append(caps(3))
    j.close()
    (seg,) = list((tmp_path / "slot-0").glob("*.jsonl"))
    with seg.open("ab") as fh:
        fh.write(b'{"session_id": "s", "user_te')  # a crash mid-write
    j2 = Journal(str(tmp_path), max_bytes=10_000_000)
    j2.open()
    assert j2.entries == 4
    captures, lines = read_segment(seg)
    assert len(captures) == 3 and lines == 4
    j2.remove(seg, lines)
    assert j2.entries == 0
    j2.close()


def test_each_process_gets_its_own_slot(tmp_path: Path) -> None:
    a, b = Journal(str(tmp_path), 10_000), Journal(str(tmp_path), 10_000)
    a.open()
    b.open()
    assert a.dir.name == "slot-0" and b.dir.name == "slot-1"
    a.append(caps(2))
    a.close()
    c = Journal(str(tmp_path), 10_000)
    c.open()  # a restarted process adopts the free slot and its backlog
    assert c.dir.name == "slot-0" and c.entries == 2
    b.close()
    c.close()


def test_backlog_of_a_slot_nobody_restarts_on_is_adopted(tmp_path: Path) -> None:
    a, b, c = (Journal(str(tmp_path), 10_000) for _ in range(3))
    for j in (a, b, c):
        j.open()
    assert c.dir.name == "slot-2"
    c.append(caps(3))
    c.close()  # slot-2's process is gone, its backlog stays on disk
    b.close()  # ...and the fleet shrank: slot-1 is free too
    d = Journal(str(tmp_path), 10_000)
    d.open()
    assert d.dir.name == "slot-1"  # the lowest free slot, not the one with the backlog
    assert d.entries == 3  # adopted all the same
    assert not list((tmp_path / "slot-2").glob("*.jsonl"))
    d.append(caps(1))  # new segments never overwrite adopted ones
    d.seal()
    sync(d)
    seen: list[Capture] = []
    while (seg := d.oldest_sealed()) is not None:
        captures, lines = read_segment(seg)
        seen += captures
        d.remove(seg, lines)
    assert seen == caps(3) + caps(1)
    a.close()
    d.close()


def test_size_bound(tmp_path: Path) -> None:
    j = Journal(str(tmp_path), max_bytes=400)
    j.open()
    kept = j.append(caps(50))
    assert 0 < kept < 50
    assert j.append(caps(1)) == 0
    j.close()


def test_learner_round_trips_and_old_lines_are_legacy(tmp_path: Path) -> None:
    owned = Capture("s", "u", "a", 1.0, {}, "id-1", learner_id="anon_5f2c")
    assert decode(encode(owned)) == owned
    unowned = Capture("s", "u", "a", 1.0, {}, "id-2")  # no learner given: stays empty
    assert decode(encode(unowned)) == unowned
    before_learners = b'{"session_id": "s", "user_text": "u", "agent_text": "a", ' + (
        b'"timestamp": 1.0, "metadata": {}, "capture_id": "id-3"}\n'
    )
    old = decode(before_learners)
    assert old is not None and old.learner_id == LEGACY_LEARNER == "legacy"


def test_a_full_disk_cuts_the_half_written_line_and_says_why(tmp_path: Path) -> None:
    """The disk fills in the middle of a line (a short write, then ENOSPC): append stops
    there, says why, and the segment holds whole lines only, so replay loses nothing it
    counted (before, the error reached the voice path and a torn line hid the next one)."""
    import errno

    j = Journal(str(tmp_path), max_bytes=10_000_000)
    j.open()
    assert j.append(caps(2)) == 2
    room = {"bytes": 30}  # what the disk still takes

    class FillingDisk:
        def __init__(self, raw) -> None:  # type: ignore[no-untyped-def]
            self.raw = raw

        def write(self, data: bytes) -> int:
            if room["bytes"] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = self.raw.write(data[: room["bytes"]])
            room["bytes"] -= n
            return n

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.raw, name)

    j._tail = FillingDisk(j._tail)  # type: ignore[assignment]
    assert j.append(caps(3)) == 0
    assert j.disk_error == "No space left on device" and j.entries == 2
    room["bytes"] = 10_000  # space returns
    more = [Capture("s", "after", "a", 9.0, {}, "id-after")]
    assert j.append(more) == 1 and j.disk_error is None
    j.seal()
    sync(j)
    seg = j.oldest_sealed()
    assert seg is not None
    captures, lines = read_segment(seg)
    assert captures == caps(2) + more and lines == 3
    j.close()
