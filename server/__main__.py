"""`python -m server`: serve the Learning Voice Agent.

Settings come from environment variables (see README); `--host` and `--port` override
HOST and PORT.
"""

from __future__ import annotations

import argparse
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
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    from server.app import create_app

    log = logging.getLogger("server")
    log.info("starting", extra={"config": settings.redacted()})
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=10.0,
        access_log=None,
        print=lambda msg: log.info(msg),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
