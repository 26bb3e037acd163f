"""A loopback OTLP/HTTP trace collector that keeps nothing: it counts what it is sent.

    python -m loadtest.otlp_sink --port 4318

`POST /v1/traces` answers every export at once (spans decoded only to be counted);
`GET /stats` gives {"requests", "spans", "bytes"}. For the tracing benchmark
(loadtest/bench_tracing.py): the server exports to it as to a real collector.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()
STATS: web.AppKey[dict[str, int]] = web.AppKey("stats")


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    stats = request.app[STATS]
    stats["requests"] += 1
    stats["bytes"] += len(body)
    export = ExportTraceServiceRequest.FromString(body)
    stats["spans"] += sum(len(ss.spans) for rs in export.resource_spans for ss in rs.scope_spans)
    return web.Response(body=_OK, content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS] = {"requests": 0, "spans": 0, "bytes": 0}
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=4318)
    args = p.parse_args(argv)
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
