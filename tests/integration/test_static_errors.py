"""Static files answer errors in the API's JSON shape, and a name the file system refuses
is a 404, not a 500 (both found by the HTTP fuzzer, docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import create_app
from server.settings import Settings


@pytest.mark.parametrize("prefix", ["/static", "/admin/static"])
@pytest.mark.parametrize(
    "name",
    ["missing.js", "0", "x" * 300, "%E1%B9%B0" * 120, "a%00b", "sub/missing.css", ""],
)
async def test_missing_static_files_are_json_404s(tmp_path: Path, prefix: str, name: str) -> None:
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"))
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.get(f"{prefix}/{name}")
        assert resp.status in (403, 404), await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"]["code"] in ("not_found", "forbidden")
        ok = await client.get("/static/index.html" if prefix == "/static" else "/admin/")
        assert ok.status == 200
