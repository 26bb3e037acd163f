"""Helpers for the storage tests (no tests here): a tiny app with only the captures routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.appkeys import IDENTITY, LIMITS, STORAGE
from server.http_errors import json_errors
from server.identity.setup import build_identity
from server.limits.policy import Limits
from server.limits.store import LocalStore
from server.routes.captures import routes
from server.settings import Settings
from server.storage.base import LEGACY_LEARNER
from server.storage.factory import Storage, close_storage, open_storage


def storage_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.from_env(
        {},
        database_path=str(tmp_path / "learning_captures.db"),
        capture_journal_dir=str(tmp_path / "journal"),
        capture_flush_ms=20,
        **overrides,
    )


def app_with(storage: Storage, settings: Settings) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[STORAGE] = storage
    app[IDENTITY] = build_identity(settings, storage.captures.is_forgotten)
    app[LIMITS] = Limits(settings, LocalStore())
    app.add_routes(routes)
    return app


def bearer(app: web.Application, learner_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app[IDENTITY].tokens.issue(learner_id)}"}


@contextlib.asynccontextmanager
async def make_client(
    tmp_path: Path, learner: str = LEGACY_LEARNER, **overrides: object
) -> AsyncIterator[TestClient]:
    """A client of the captures routes that asks as `learner` (captures written without a
    learner, as the tests seed them, belong to the legacy learner)."""
    settings = storage_settings(tmp_path, **overrides)
    storage = await open_storage(settings)
    app = app_with(storage, settings)
    client = TestClient(TestServer(app), headers=bearer(app, learner))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await close_storage(storage)
