"""`python -m server --workers N`: N worker processes on one port, one event loop each.

One process runs one event loop on one core, so a host with more cores runs more
processes. Each worker is a plain `python -m server` child that binds the same host and
port with SO_REUSEPORT: the kernel spreads new connections evenly over the listening
workers (no accept thundering herd, no shared socket state), and a WebSocket stays on the
worker that accepted it. The supervisor (this module) binds nothing itself: it starts the
workers, restarts one that dies, forwards SIGTERM/SIGINT and waits for a clean shutdown.

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

#: A worker that exits this soon after its start failed to start: stop, do not loop.
STARTUP_GRACE_S = 15.0
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
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                _mark_dead(proc.pid, mp_dir)
                if time.monotonic() - self.started[index] < STARTUP_GRACE_S:
                    log.error("worker failed to start", extra={"worker": index, "code": code})
                    return code or 1
                log.error("worker died; restarting", extra={"worker": index, "code": code})
                self._spawn(index)
        return 0

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
