"""Operator surface: admin API, dashboard, Prometheus metrics, maintenance, health.

`server` wires in one `AdminHub` (see `admin.hub` for exactly how); nothing in `admin`
imports `server` or `pipelines` internals.
"""

from admin.hub import AdminHub

__all__ = ["AdminHub"]
