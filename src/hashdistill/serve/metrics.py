"""The service's Prometheus metrics (``GET /metrics``, docs/service.md "Operations"), in a registry of the app's
own (no process-wide state): requests by route, method and status; latency histograms by route; the items
held; the collection's code length, encoder and index kind."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metrics of one app over ``collection``."""

    def __init__(self, collection: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hashdistill_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "hashdistill_request_seconds", "Time to answer, by route", ["route"], buckets=BUCKETS, registry=self.registry
        )
        items = Gauge("hashdistill_items", "Items in the collection", registry=self.registry)
        items.set_function(lambda: len(collection))
        Info("hashdistill_collection", "The collection served", registry=self.registry).info({
            "bits": str(collection.bits), "engine": str(collection.meta["engine"]),
            "backend": str(collection.meta["backend"]), "index": str(getattr(collection.index, "method", "milvus")),
        })  # fmt: skip

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request under its route's template (``/items/{item_id}``, never the
    id itself: bounded label values), ``unmatched`` when no route took it (a 404, a body refused unread)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - t0)
