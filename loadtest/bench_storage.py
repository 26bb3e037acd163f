"""Storage benchmark: capture write throughput, embedding, search latency, loop lag.

For each backend it starts from an empty database, writes N synthetic captures through
the real CaptureWriter (the voice loop's path) while a 20 ms ticker measures how late the
event loop runs (what a voice session's frame pacing would feel), embeds them all, then
times hybrid and keyword-only searches with the query cache off.

    python -m loadtest.bench_storage --captures 100000 --queries 300 \
        --backends sqlite,postgres [--postgres-dsn postgresql://postgres@127.0.0.1/postgres]
        [--pgvector-dsn postgresql://postgres@127.0.0.1:PORT/postgres]

Postgres runs use a throwaway database `lva_bench_<random>` that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from pipelines.ports import Capture
from server.storage.base import SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore
from server.storage.postgres import PostgresCaptureStore
from server.storage.sqlite import SQLiteCaptureStore
from server.storage.writer import CaptureWriter

TOPICS = [
    ("spaced repetition", "reviewing flashcards at growing intervals"),
    ("photosynthesis", "plants turning sunlight into sugar"),
    ("compound interest", "money earning interest on its interest"),
    ("the French Revolution", "the fall of the monarchy in 1789"),
    ("neural networks", "weights adjusted by backpropagation"),
    ("black holes", "stars collapsing under gravity"),
    ("recursion", "a function that calls itself"),
    ("plate tectonics", "continents drifting on the mantle"),
    ("Spanish verbs", "conjugating the preterite and imperfect"),
    ("chess openings", "controlling the centre early"),
    ("the immune system", "antibodies recognising pathogens"),
    ("supply and demand", "prices set by buyers and sellers"),
    ("meditation", "attention training and stress"),
    ("jazz harmony", "seventh chords and the ii-V-I"),
    ("sourdough baking", "wild yeast and long fermentation"),
]
OPENERS = ["Can you explain", "I keep forgetting", "Tell me more about", "Why does", "Quiz me on"]
QUERIES = [
    "that thing about reviewing cards at longer gaps",
    "how leaves make food from light",
    "interest growing on itself",
    "storming the Bastille",
    "training models with gradients",
    "collapsed stars",
    "a function calling itself",
    "why continents move",
    "past tense in Spanish",
    "first moves in chess",
    "how vaccines help antibodies",
    "what sets prices",
    "calming the mind",
    "chord progressions in jazz",
    "bread with natural yeast",
]


def synthetic(n: int, seed: int = 7) -> list[Capture]:
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        topic, detail = rng.choice(TOPICS)
        user = f"{rng.choice(OPENERS)} {topic}? Something about {detail}, case {i}."
        agent = f"Sure: {topic} is about {detail}. Try explaining it back to me in one line."
        ts = now - rng.uniform(0, 30 * 86400)
        out.append(Capture(f"bench{i % 5000}", user, agent, ts, {"n": i}))
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def loop_lag(stop: asyncio.Event, period: float = 0.02) -> list[float]:
    """Lateness (ms) of a 20 ms ticker: what frame pacing in the same loop would suffer."""
    lags = []
    next_t = time.perf_counter() + period
    while not stop.is_set():
        await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
        lags.append((time.perf_counter() - next_t) * 1000)
        next_t += period
    return lags


async def _stream(writer: CaptureWriter, captures: list[Capture], rate: float) -> None:
    """Submit captures at a steady rate in 10 ms ticks, as many live sessions would."""
    per_tick = max(1, round(rate / 100))
    for i in range(0, len(captures), per_tick):
        for c in captures[i : i + per_tick]:
            writer.submit(c)
        await asyncio.sleep(0.01)


async def _lag_during(work: Awaitable[Any] | None, seconds: float) -> list[float]:
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(stop))
    if work is None:
        await asyncio.sleep(seconds)
    else:
        await work
    stop.set()
    return await ticker


def _lag_summary(lags: list[float]) -> list[float]:
    return [round(pct(lags, 50), 2), round(pct(lags, 99), 2), round(max(lags), 2)]


@asynccontextmanager
async def pg_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"lva_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield admin_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def bench_backend(label: str, backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    # auto_index off: writes are measured alone, then embedding is timed on its own.
    store = HybridStore(backend, default_embedder(), cache_ttl=0.0, auto_index=False)
    await store.start()
    result: dict[str, Any] = {"backend": label, "captures": args.captures}
    try:
        captures = synthetic(args.captures)
        with tempfile.TemporaryDirectory() as journal:
            writer = CaptureWriter(store, args.batch, 200, args.captures + 1, journal)
            await writer.start()
            # 1. Throughput: everything submitted at once, time until all are written.
            t0 = time.perf_counter()
            for i, c in enumerate(captures):
                writer.submit(c)
                if i % 200 == 199:
                    await asyncio.sleep(0)
            while True:  # polling keeps the measurement free of extra hooks in the writer
                if writer.written >= len(captures):
                    break
                await asyncio.sleep(0.01)
            result["write_captures_per_s"] = round(len(captures) / (time.perf_counter() - t0))
            # 2. Loop lag: idle, then while a steady stream of captures is written.
            result["loop_lag_idle_ms_p50_p99_max"] = _lag_summary(await _lag_during(None, 5))
            stream = synthetic(int(args.stream_rate * 10), seed=11)
            lags = await _lag_during(_stream(writer, stream, args.stream_rate), 10)
            result[f"loop_lag_writing_{args.stream_rate}_per_s_ms_p50_p99_max"] = _lag_summary(lags)
            await writer.close()
        t0 = time.perf_counter()
        embedded = await store.index_pending()
        result["embed_per_s"] = round(embedded / (time.perf_counter() - t0))
        rng = random.Random(3)
        await store.search(SearchQuery(QUERIES[0]))  # warm the in-process vector index

        async def hybrid() -> None:
            await store.search(SearchQuery(rng.choice(QUERIES), limit=10))

        async def keyword() -> None:
            await store.keyword_only(SearchQuery(rng.choice(QUERIES), limit=10))

        for name, fn in (("hybrid", hybrid), ("keyword", keyword)):
            ms = await timed(fn, args.queries)
            result[f"search_{name}_ms_p50_p95"] = [round(pct(ms, 50), 1), round(pct(ms, 95), 1)]
        ms = await timed(lambda: store.stats(), 20)
        result["stats_ms_p50"] = round(statistics.median(ms), 1)
    finally:
        await store.close()
    return result


async def main(args: argparse.Namespace) -> None:
    results = []
    for name in args.backends.split(","):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                backend = SQLiteCaptureStore(str(Path(tmp) / "bench.db"))
                results.append(await bench_backend("sqlite", backend, args))
        elif name == "postgres":
            async with pg_database(args.postgres_dsn) as dsn:
                backend = PostgresCaptureStore(dsn)
                results.append(await bench_backend("postgres (exact cosine)", backend, args))
        elif name == "pgvector":
            async with pg_database(args.pgvector_dsn) as dsn:
                backend = PostgresCaptureStore(dsn)
                results.append(await bench_backend("postgres + pgvector hnsw", backend, args))
        print(json.dumps(results[-1]), flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--captures", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--batch", type=int, default=100, help="CAPTURE_BATCH_SIZE")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--pgvector-dsn", default="")
    p.add_argument("--stream-rate", type=float, default=500, help="captures/s while timing lag")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
