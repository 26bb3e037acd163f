"""Helpers for the storage tests (no tests here): a tiny app with only the captures routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.appkeys import STORAGE
from server.http_errors import json_errors
from server.routes.captures import routes
from server.settings import Settings
from server.storage.factory import Storage, close_storage, open_storage


def storage_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.from_env(
        {},
        database_path=str(tmp_path / "learning_captures.db"),
        capture_journal_dir=str(tmp_path / "journal"),
        capture_flush_ms=20,
        **overrides,
    )


def app_with(storage: Storage) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[STORAGE] = storage
    app.add_routes(routes)
    return app


@contextlib.asynccontextmanager
async def make_client(tmp_path: Path, **overrides: object) -> AsyncIterator[TestClient]:
    storage = await open_storage(storage_settings(tmp_path, **overrides))
    client = TestClient(TestServer(app_with(storage)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await close_storage(storage)
