"""The OpenAPI description is generated from the routes: every route has one, it is a
valid OpenAPI 3 document, and the shared rules (error shape, auth, limits) are in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import openapi
from server.app import create_app
from server.settings import Settings


def app(tmp_path: Path) -> web.Application:
    return create_app(Settings.from_env({}, database_path=str(tmp_path / "c.db")))


def test_every_route_has_a_description(tmp_path: Path) -> None:
    assert openapi.undescribed(app(tmp_path)) == []


def test_a_route_without_a_description_is_found(tmp_path: Path) -> None:
    application = app(tmp_path)

    async def bare(request: web.Request) -> web.Response:
        return web.json_response({})

    application.router.add_get("/api/bare", bare)
    assert openapi.undescribed(application) == ["GET /api/bare"]
    assert "/api/bare" not in openapi.document(application)["paths"]


def test_the_document_is_valid_and_carries_the_shared_rules(tmp_path: Path) -> None:
    import schemathesis

    doc = openapi.document(app(tmp_path))
    schema = schemathesis.openapi.from_dict(doc)
    assert all(r.ok() for r in schema.get_all_operations())
    paths = doc["paths"]
    search = paths["/api/search"]["post"]
    assert search["security"] == [{"learnerToken": []}]
    assert {"200", "400", "401", "413", "415", "429", "503"} <= set(search["responses"])
    body = search["requestBody"]["content"]
    assert list(body) == ["application/json"] and body["application/json"]["schema"]["required"]
    error = search["responses"]["415"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in search["responses"]["429"]["headers"]
    admin = paths["/admin/api/maintenance"]["post"]
    assert admin["security"] == [{"adminKey": []}]
    assert {"401", "429", "503"} <= set(admin["responses"])
    history = paths["/api/sessions/{session_id}/history"]["get"]
    assert {p["name"]: p["in"] for p in history["parameters"]} == {
        "session_id": "path",
        "limit": "query",
    }
    assert "404" in history["responses"]
    # No auth, no data: the description itself and the learner's first call.
    assert "security" not in paths["/openapi.json"]["get"]
    assert "security" not in paths["/api/learners"]["post"]


@pytest.mark.parametrize("accept", ["application/json", "*/*"])
async def test_served_without_auth(tmp_path: Path, accept: str) -> None:
    async with TestClient(TestServer(app(tmp_path))) as client:
        resp = await client.get("/openapi.json", headers={"Accept": accept})
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.") and "/api/conversation" in doc["paths"]
    assert resp.headers["X-Request-ID"]
