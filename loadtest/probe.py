"""CPU and memory of the server under test, read from the outside (psutil over /proc).

Given the server's pid, the probe sums over it and its children (the workers of
`python -m server --workers N`), so one number covers the whole server.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float
    cpu_s: float
    rss: int
    processes: int


class ServerProbe:
    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def _processes(self) -> list[psutil.Process]:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        return procs

    def sample(self) -> Sample:
        import time

        cpu = 0.0
        rss = 0
        n = 0
        for p in self._processes():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
                n += 1
            except psutil.Error:
                continue
        return Sample(time.monotonic(), cpu, rss, n)


def cpu_cores(a: Sample, b: Sample) -> float:
    """Cores used on average between two samples (1.0 = one core fully busy)."""
    return (b.cpu_s - a.cpu_s) / max(1e-9, b.wall - a.wall)


def self_sample() -> Sample:
    """The load generator's own process, to show it is not the bottleneck."""
    import time

    p = psutil.Process()
    t = p.cpu_times()
    return Sample(time.monotonic(), t.user + t.system, p.memory_info().rss, 1)
