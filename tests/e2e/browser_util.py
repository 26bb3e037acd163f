"""Helpers for the browser end-to-end tests: the real server as a child process, Debian
Chromium with a fake microphone fed from a WAV file, and waits on the page's `__lva` state.

Chromium's fake capture device starts the WAV from its beginning when a page opens the
microphone and then loops it, so a test knows where the speech is: lead silence, speech,
trailing silence, again and again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = (
    "/usr/bin/chromium"
    if Path("/usr/bin/chromium").exists()
    else shutil.which("chromium") or "/usr/bin/chromium"
)
ADMIN_KEY = "e2e-admin-key-0123456"


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return (
            f"Chromium is missing ({CHROMIUM}): install it with "
            "`apt-get install chromium` (make test does this when run as root)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is missing: pip install -e '.[dev]'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m server` on embedded defaults, with its database in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.log_path = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        env = {
            **os.environ,
            "DATABASE_PATH": str(self.tmp / "captures.db"),
            "ADMIN_API_KEY": ADMIN_KEY,
            "LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("REDIS_URL", "DATABASE_URL"):
            env.pop(name, None)
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.tmp,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            if self._status("/") == 200 and self._status("/health/ready") == 200:
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.logs()}")

    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


def chromium_args(wav: Path | None, *, fake_ui: bool = True) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}")
    return args


def lva(page: Any, key: str) -> Any:
    return page.evaluate(f"window.__lva[{key!r}]")


def wait_lva(page: Any, condition: str, timeout: float = 30.0) -> None:
    """Wait until a JS expression over `s` (= window.__lva) is true; on timeout, fail
    with the page's state so the failure says what happened instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            f"() => {{ const s = window.__lva; return !!(s && ({condition})); }}",
            timeout=timeout * 1000,
            polling=50,
        )
    except PlaywrightTimeout:
        state = page.evaluate("JSON.stringify(window.__lva || null)")
        message = f"timed out after {timeout}s waiting for {condition}\n{state}"
        raise AssertionError(message) from None


def wait_speech_then_quiet(page: Any, quiet_ms: int = 800, timeout: float = 30.0) -> None:
    """Wait until the microphone heard sound since now and has then been quiet `quiet_ms`
    (longer than the pauses between words, shorter than the WAV's silence)."""
    since = page.evaluate("performance.now()")
    wait_lva(page, f"s.micLoudAt > {since}", timeout)
    quiet = f"performance.now() - s.micLoudAt > {quiet_ms}"
    wait_lva(page, f"s.micLoudAt > {since} && {quiet}", timeout)


def wait_quiet(page: Any, quiet_ms: int, timeout: float = 30.0) -> None:
    wait_lva(page, f"performance.now() - s.micLoudAt > {quiet_ms}", timeout)
