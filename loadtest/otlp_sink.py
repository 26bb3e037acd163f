"""A loopback OTLP/HTTP trace collector that keeps nothing: it counts what it is sent.

    python -m loadtest.otlp_sink --port 4318 [--decode]

`POST /v1/traces` answers every export at once; `GET /stats` gives {"requests", "bytes",
"spans"} (spans only with `--decode`: decoding costs CPU on the load generator's core, and
the server logs how many spans it exported anyway). For the tracing benchmark
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
DECODE: web.AppKey[bool] = web.AppKey("decode")


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    stats = request.app[STATS]
    stats["requests"] += 1
    stats["bytes"] += len(body)
    if request.app[DECODE]:
        export = ExportTraceServiceRequest.FromString(body)
        spans = (ss.spans for rs in export.resource_spans for ss in rs.scope_spans)
        stats["spans"] += sum(len(s) for s in spans)
    return web.Response(body=_OK, content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app(decode: bool = False) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS] = {"requests": 0, "spans": 0, "bytes": 0}
    app[DECODE] = decode
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=4318)
    p.add_argument("--decode", action="store_true", help="decode each export to count spans")
    args = p.parse_args(argv)
    app = make_app(args.decode)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
