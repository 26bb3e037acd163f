"""The scheduling core of the model executor: per-owner FIFOs served round-robin, bounded
per owner with one overflow rule. Deterministic: no threads, no clock."""

from __future__ import annotations

import pytest

from pipelines.fair_queue import FairQueue


def drain(q: FairQueue[str, str]) -> list[str]:
    out = []
    while (taken := q.pop()) is not None:
        out.append(taken[1])
    return out


def test_owners_take_turns_whatever_their_backlog() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=100)
    for i in range(5):
        q.put("flood", f"f{i}")
    q.put("learner", "l0")
    q.put("other", "o0")
    q.put("learner", "l1")
    assert q.owners() == ["flood", "learner", "other"]
    assert drain(q) == ["f0", "l0", "o0", "f1", "l1", "f2", "f3", "f4"]
    assert len(q) == 0 and q.owners() == []


def test_a_newcomer_waits_behind_at_most_one_job_of_each_owner_with_work() -> None:
    """Two threads busy with a flood of two sessions: the learner's job is the third out,
    i.e. the next one a thread takes after one job of each flooder."""
    q: FairQueue[str, str] = FairQueue(max_queued=8)
    for i in range(8):
        q.put("a", f"a{i}")
        q.put("b", f"b{i}")
    assert q.pop() == ("a", "a0")
    assert q.pop() == ("b", "b0")  # both threads busy
    q.put("learner", "final")
    assert [q.pop() for _ in range(3)] == [("a", "a1"), ("b", "b1"), ("learner", "final")]


def test_an_owner_that_runs_dry_rejoins_at_the_back() -> None:
    q: FairQueue[str, str] = FairQueue()
    q.put("a", "a0")
    q.put("b", "b0")
    assert q.pop() == ("a", "a0")
    q.put("a", "a1")  # a had nothing queued: it goes behind b
    assert drain(q) == ["b0", "a1"]


def test_a_droppable_job_replaces_the_owners_older_one_in_place() -> None:
    q: FairQueue[str, str] = FairQueue()
    q.put("a", "final0")
    assert q.put("a", "interim1", droppable=True) == (True, [])
    q.put("b", "b0")
    assert q.put("a", "interim2", droppable=True) == (True, ["interim1"])
    assert q.queued("a") == ["final0", "interim2"]
    assert len(q) == 3
    assert drain(q) == ["final0", "b0", "interim2"]


def test_replacing_the_only_job_keeps_the_owners_place_in_line() -> None:
    q: FairQueue[str, str] = FairQueue()
    q.put("a", "interim1", droppable=True)
    q.put("b", "b0")
    assert q.put("a", "interim2", droppable=True) == (True, ["interim1"])
    assert q.owners() == ["a", "b"]
    assert drain(q) == ["interim2", "b0"]


def test_a_full_line_refuses_an_interim_and_holds_a_final() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=2)
    q.put("a", "final0")
    q.put("a", "final1")
    assert q.put("a", "interim", droppable=True) == (False, [])
    assert q.put("a", "final2") == (True, [])
    assert q.put("a", "final3") == (True, [])
    assert q.queued("a") == ["final0", "final1"]
    assert q.held("a") == ["final2", "final3"]
    assert len(q) == 4
    # Held jobs join the line, in order, as the owner's jobs leave it: none is lost.
    assert q.pop() == ("a", "final0")
    assert q.queued("a") == ["final1", "final2"]
    assert drain(q) == ["final1", "final2", "final3"]


def test_a_final_at_a_full_line_drops_the_owners_queued_interim() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=2)
    q.put("a", "final0")
    q.put("a", "interim", droppable=True)
    assert q.put("a", "final1") == (True, ["interim"])
    assert q.queued("a") == ["final0", "final1"] and q.held("a") == []


def test_one_owners_overflow_never_touches_another_owner() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=1)
    q.put("learner", "interim", droppable=True)
    for i in range(10):
        q.put("flood", f"f{i}")
    assert q.queued("learner") == ["interim"]
    assert drain(q)[:2] == ["interim", "f0"]


def test_removing_a_job_its_caller_gave_up_on() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=2)
    for job in ("a0", "a1", "a2"):
        q.put("a", job)
    q.put("b", "b0")
    assert q.remove("a", "a2")  # held
    assert q.remove("a", "a0")  # queued
    assert not q.remove("a", "a0")  # already gone
    assert not q.remove("nobody", "x")
    assert q.queued("a") == ["a1"] and len(q) == 2
    assert q.remove("a", "a1")
    assert q.owners() == ["b"]
    assert drain(q) == ["b0"]


def test_removing_a_queued_job_lets_a_held_one_in() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=1)
    q.put("a", "a0")
    q.put("a", "a1")
    assert q.remove("a", "a0")
    assert q.queued("a") == ["a1"] and q.held("a") == []
    assert drain(q) == ["a1"]


def test_drain_takes_everything() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=1)
    q.put("a", "a0")
    q.put("a", "a1")
    q.put("b", "b0")
    assert sorted(q.drain()) == ["a0", "a1", "b0"]
    assert len(q) == 0 and q.pop() is None


def test_a_line_must_hold_something() -> None:
    with pytest.raises(ValueError):
        FairQueue(max_queued=0)


def test_the_owner_that_used_least_goes_first() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=100)
    for i in range(3):
        q.put("flood-a", f"a{i}")
        q.put("flood-b", f"b{i}")
    q.charge("flood-a", 2.0, now=0.0)
    q.charge("flood-b", 1.0, now=0.0)
    q.put("learner", "final")
    assert q.pop(now=0.0) == ("learner", "final")  # used nothing: first, behind nobody
    assert q.pop(now=0.0) == ("flood-b", "b0")  # used less than a
    q.charge("flood-b", 2.0, now=0.0)  # b0 ran for 2 s: now b has used more
    assert q.pop(now=0.0) == ("flood-a", "a0")


def test_use_decays_by_half_every_half_life() -> None:
    q: FairQueue[str, str] = FairQueue(half_life=10.0)
    q.charge("a", 8.0, now=100.0)
    assert q.use("a", 100.0) == 8.0
    assert q.use("a", 110.0) == pytest.approx(4.0)
    q.charge("a", 1.0, now=120.0)
    assert q.use("a", 120.0) == pytest.approx(3.0)
    assert q.use("nobody", 120.0) == 0.0
    # A former heavy user who stopped is not held back for long.
    q.charge("b", 1.0, now=120.0)
    q.put("a", "a0")
    q.put("b", "b0")
    assert q.pop(now=120.0) == ("b", "b0")
    q.put("b", "b1")
    assert q.pop(now=300.0) == ("a", "a0")  # both decayed to almost nothing: in turn


def test_equal_use_is_served_round_robin() -> None:
    q: FairQueue[str, str] = FairQueue(max_queued=100)
    for key in ("a", "b", "c"):
        q.charge(key, 1.0, now=0.0)
        q.put(key, f"{key}0")
        q.put(key, f"{key}1")
    assert [q.pop(now=0.0)[1] for _ in range(6)] == ["a0", "b0", "c0", "a1", "b1", "c1"]


def test_owners_gone_quiet_are_forgotten() -> None:
    q: FairQueue[int, str] = FairQueue(half_life=1.0)
    for key in range(200):
        q.charge(key, 0.5, now=0.0)
    q.charge(-1, 0.5, now=60.0)  # a minute later: all the others decayed to nothing
    assert len(q._use) < 100
    assert q.use(-1, 60.0) == 0.5
