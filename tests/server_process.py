"""Run the real server as a child process for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        tmp: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ):
        self.port = port or free_port()
        self.args = list(args or [])  # e.g. ["--workers", "2"]
        self.tmp = tmp
        self.db_path = tmp / "learning_captures.db"
        self.log_path = tmp / "server.log"
        self.env = {
            **os.environ,
            # The checkout under test, whatever the virtualenv's editable install points at.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DATABASE_PATH": str(self.db_path),
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 90.0) -> ServerProcess:
        self._log = open(self.log_path, "wb")
        argv = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, *self.args],
            cwd=self.tmp,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.http + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {ready_timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(self.http + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def learner(self) -> str:
        """A new learner's credential (`POST /api/learners`)."""
        status, body = self.post_json("/api/learners", {})
        assert status == 201, body
        return str(body["learner_token"])

    def post_json(self, path: str, body: object, headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.http + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
