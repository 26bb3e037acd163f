"""`python -m server --workers N`: N worker processes on one port, one event loop each.

One process runs one event loop on one core, so a host with more cores runs more
processes. Each worker is a plain `python -m server` child that binds the same host and
port with SO_REUSEPORT: the kernel spreads new connections evenly over the listening
workers (no accept thundering herd, no shared socket state), and a WebSocket stays on the
worker that accepted it. The supervisor (this module) binds nothing itself: it starts the
workers, restarts one that dies (at once if it had run for a while, else after a growing
delay, so a crash loop does not spin), forwards SIGTERM/SIGINT and waits for a clean shutdown.

Metrics: before any worker starts, `PROMETHEUS_MULTIPROC_DIR` is set (a fresh private
directory unless the operator set one), so every worker writes its series there and
`/metrics` answered by any worker is the sum over all of them; the supervisor marks a
dead worker's live gauges dead. Session context is per process unless `REDIS_URL` is set,
so run several workers with Redis (a reconnect may land on another worker).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger("server.workers")

#: A worker that lives this long counts as started: its next death restarts it at once.
STARTUP_GRACE_S = 15.0
#: A worker that dies sooner is restarted after a delay doubling from the first to the
#: cap, so a crash loop (a database that refuses every connection) does not spin.
RESTART_BACKOFF_S = (0.5, 30.0)
#: Give up only when every worker has died this many times in a row before it started:
#: the server cannot start at all (a bad certificate, a port taken by another program).
MAX_EARLY_DEATHS = 8
STOP_TIMEOUT_S = 30.0


def reuse_port_available(host: str, port: int) -> str | None:
    """None if workers can share host:port with SO_REUSEPORT, else why not."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return "SO_REUSEPORT is not available on this platform"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return f"cannot bind {host}:{port}: {exc.strerror}"
    return None


class Supervisor:
    def __init__(self, workers: int, host: str, port: int, extra_args: list[str]) -> None:
        self.count = workers
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.stopping = False
        self.early_deaths: dict[int, int] = {}  # consecutive deaths within the grace
        self.restart_at: dict[int, float] = {}  # index -> monotonic time of its restart
        self._own_dir: str | None = None

    def metrics_dir(self) -> str:
        """The shared Prometheus directory (created, private, if the operator set none)."""
        current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if current:
            os.makedirs(current, exist_ok=True)
            return current
        self._own_dir = tempfile.mkdtemp(prefix="lva-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._own_dir
        return self._own_dir

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "server", "--host", self.host, "--port", str(self.port)]
        cmd += ["--worker", *self.extra_args]
        env = {**os.environ, "LVA_WORKER_INDEX": str(index)}
        proc = subprocess.Popen(cmd, env=env)
        self.procs[index] = proc
        self.started[index] = time.monotonic()
        log.info("worker started", extra={"worker": index, "worker_pid": proc.pid})

    def _signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        why = reuse_port_available(self.host, self.port)
        if why:
            log.error("cannot start workers: %s", why)
            return 2
        mp_dir = self.metrics_dir()
        log.info("starting workers", extra={"workers": self.count, "metrics_dir": mp_dir})
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        try:
            for i in range(self.count):
                self._spawn(i)
            return self._watch(mp_dir)
        finally:
            self._stop_all()
            if self._own_dir:
                shutil.rmtree(self._own_dir, ignore_errors=True)

    def _watch(self, mp_dir: str) -> int:
        while not self.stopping:
            time.sleep(0.2)
            code = self._reap(mp_dir)
            if code is not None:
                return code
            now = time.monotonic()
            for index, when in list(self.restart_at.items()):
                if now >= when and not self.stopping:
                    del self.restart_at[index]
                    self._spawn(index)
        return 0

    def _reap(self, mp_dir: str) -> int | None:
        """Schedule the restart of every worker that died; an exit code to stop with when
        the server cannot start at all."""
        now = time.monotonic()
        for index, proc in list(self.procs.items()):
            if index in self.restart_at or self.stopping:
                continue
            code = proc.poll()
            if code is None:
                if now - self.started[index] >= STARTUP_GRACE_S:
                    self.early_deaths[index] = 0
                continue
            _mark_dead(proc.pid, mp_dir)
            lived = now - self.started[index]
            if lived >= STARTUP_GRACE_S:
                self.early_deaths[index] = 0
                delay = 0.0
            else:
                n = self.early_deaths.get(index, 0) + 1
                self.early_deaths[index] = n
                first, cap = RESTART_BACKOFF_S
                delay = min(cap, first * 2 ** (n - 1))
            self.restart_at[index] = now + delay
            log.error(
                "worker died; restarting",
                extra={
                    "worker": index,
                    "code": code,
                    "lived_s": round(lived, 1),
                    "restart_in_s": delay,
                },
            )
        if len(self.restart_at) == len(self.procs) and all(
            self.early_deaths.get(i, 0) >= MAX_EARLY_DEATHS for i in self.procs
        ):
            log.error("no worker stays up; stopping", extra={"deaths": MAX_EARLY_DEATHS})
            return 1
        return None

    def _stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _mark_dead(pid: int, mp_dir: str) -> None:
    """Drop a dead worker's live gauges (sessions, queue depths) from the shared sums."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, mp_dir)
    except Exception:  # metrics hygiene must never stop the supervisor
        log.exception("could not mark worker %s dead in %s", pid, mp_dir)
