"""The supervisor's restart policy, with workers that are tiny stand-in processes."""

from __future__ import annotations

import subprocess
import sys
import time

from server import workers
from server.workers import Supervisor


def _stand_in(code: str):
    def spawn(self: Supervisor, index: int) -> None:
        self.procs[index] = subprocess.Popen([sys.executable, "-c", code])
        self.started[index] = time.monotonic()
        self.spawned = getattr(self, "spawned", 0) + 1

    return spawn


def test_workers_that_never_start_are_retried_with_backoff_then_given_up(monkeypatch, tmp_path):
    monkeypatch.setattr(workers, "RESTART_BACKOFF_S", (0.05, 0.2))
    monkeypatch.setattr(workers, "MAX_EARLY_DEATHS", 4)
    monkeypatch.setattr(Supervisor, "_spawn", _stand_in("raise SystemExit(3)"))
    sup = Supervisor(2, "127.0.0.1", 0, [])
    for i in range(2):
        sup._spawn(i)
    t0 = time.monotonic()
    assert sup._watch(str(tmp_path)) == 1
    took = time.monotonic() - t0
    assert sup.spawned == 2 * 4  # each retried until its fourth early death
    assert took >= 0.05 + 0.1 + 0.2  # the delays grew: no spinning
    assert sup.early_deaths == {0: 4, 1: 4}


def test_one_crash_looping_worker_does_not_stop_the_others(monkeypatch, tmp_path):
    monkeypatch.setattr(workers, "RESTART_BACKOFF_S", (0.05, 0.1))
    monkeypatch.setattr(workers, "MAX_EARLY_DEATHS", 3)
    sup = Supervisor(2, "127.0.0.1", 0, [])
    monkeypatch.setattr(Supervisor, "_spawn", _stand_in("import time; time.sleep(30)"))
    sup._spawn(0)
    monkeypatch.setattr(Supervisor, "_spawn", _stand_in("raise SystemExit(3)"))
    sup._spawn(1)
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert sup._reap(str(tmp_path)) is None
            for index, when in list(sup.restart_at.items()):
                if time.monotonic() >= when:
                    del sup.restart_at[index]
                    sup._spawn(index)
            time.sleep(0.02)
        assert sup.early_deaths[1] > 3  # still restarting: worker 0 serves the port
        assert sup.procs[0].poll() is None
    finally:
        sup.stopping = True
        for p in sup.procs.values():
            p.kill()
            p.wait()


def test_a_worker_that_had_started_is_restarted_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(Supervisor, "_spawn", _stand_in("raise SystemExit(0)"))
    sup = Supervisor(1, "127.0.0.1", 0, [])
    sup._spawn(0)
    sup.procs[0].wait()
    sup.started[0] -= workers.STARTUP_GRACE_S + 1
    assert sup._reap(str(tmp_path)) is None
    assert sup.restart_at[0] <= time.monotonic() and sup.early_deaths[0] == 0
