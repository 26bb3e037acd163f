"""`python -m server`: serve the Learning Voice Agent.

Settings come from environment variables (see README); `--host` and `--port` override
HOST and PORT. `--workers N` runs N processes on the port (server/workers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from aiohttp import web

from server.settings import ConfigError, Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Learning Voice Agent: real-time streaming voice server.",
    )
    parser.add_argument("--host", help="interface to listen on (env HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (env PORT, default 8080)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port with SO_REUSEPORT (default 1; see "
        "server/workers.py)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default) or asyncio's own",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 256:
        parser.error("--workers must be between 1 and 256")
    return args


def _event_loop(choice: str) -> asyncio.AbstractEventLoop | None:
    """uvloop's loop (libuv) when asked or available: it takes about a quarter of the
    CPU out of every received audio frame (see docs/benchmarks.md)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop()


def _setup_logging(settings: Settings) -> None:
    try:
        from server.logging_setup import setup_logging
    except ImportError:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return
    setup_logging(settings)


async def _freeze_gc(app: web.Application) -> None:
    """Move everything alive at start-up (modules, models, the app) out of the collector's
    reach: a full collection then scans only what sessions allocate, instead of pausing
    every session for tens of milliseconds (p95 turn latency, docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    if args.workers > 1:
        from server.workers import Supervisor

        extra = ["--loop", args.loop]
        return Supervisor(args.workers, settings.host, settings.port, extra).run()
    from server.app import create_app

    log = logging.getLogger("server")
    log.info("starting", extra={"config": settings.redacted()})
    app = create_app(settings)
    app.on_startup.append(_freeze_gc)  # after storage and engine have started
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=10.0,
            access_log=None,
            reuse_port=args.worker or None,
            loop=_event_loop(args.loop),
            print=lambda msg: log.info(msg),
        )
    except Exception:
        # Logged, not printed: the log's redaction covers the traceback (a driver's error
        # may quote the URL it was given, password and all).
        log.critical("server stopped by an error", exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
