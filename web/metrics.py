"""``GET /metrics``: Prometheus text format, one registry per app (no global state).

Off (404, like any unknown path) while the config has no ``metrics_token``; with one,
``Authorization: Bearer <metrics_token>`` opens it (the api and admin tokens do not).
The token is read per request, so a live config change turns it on, off or over.

What is counted as it happens: requests (by the route's template, never the raw path,
so ids and names in paths never become labels), their latency, and the events the
store commits (a commit listener). What is read at scrape time (``ServiceCollector``):
issues per status (the stats index's counters), each subscriber's lag, each webhook's
queue and its finished deliveries by outcome, and the store's write time per batch;
each is O(statuses + subscribers + webhooks), never O(issues).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from hydraissue.model import Event
from web.keys import CONFIG, SERVICE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404 or 405)
# Seconds: from a cached page (well under a millisecond) to a large upload.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry and the metrics updated as requests and commits happen."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hydraissue_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hydraissue_http_request_duration_seconds",
            "Time from a request's arrival at the app to its answer, by route template",
            ["route", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "hydraissue_events_appended",
            "Events committed to the event store since start, by type",
            ["type"],
            registry=self.registry,
        )
        # The auto-updater (hydraissue/updater.py) runs outside the app; until it reports
        # here this stays at 0 (docs/runbook.md, Metrics).
        self.update_checks = Counter(
            "hydraissue_update_checks",
            "Checks for a newer release made by this process",
            registry=self.registry,
        )
        self.registry.register(ServiceCollector(app))
        # The labelled children by their labels: prometheus-client's own lookup (a lock
        # and a dict per call) was a tenth of a get-by-id's time.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def committed(self, events: Sequence[Event]) -> None:
        """Commit listener: count a batch's events by type (inside the commit: cheap)."""
        for kind, count in Tally(e.type for e in events).items():
            self.events.labels(kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ServiceCollector(Collector):
    """Gauges computed from the service at scrape time; nothing before it has started."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on what is running; nothing to check at register()

    def collect(self) -> Iterable[Metric]:
        service = self.app.get(SERVICE)
        if service is None:
            return
        issues = GaugeMetricFamily(
            "hydraissue_issues", "Live (not deleted) issues by status", labels=["status"]
        )
        for status, count in service.read_model.stats.status_counts().items():
            issues.add_metric([status], count)
        yield issues
        yield GaugeMetricFamily(
            "hydraissue_event_store_position",
            "Position of the last committed event",
            value=service.head,
        )
        lag = GaugeMetricFamily(
            "hydraissue_subscriber_lag_events",
            "Committed events a subscriber has not handled yet",
            labels=["subscriber"],
        )
        failures = GaugeMetricFamily(
            "hydraissue_subscriber_failures",
            "Consecutive failed attempts of a subscriber's handler (0: healthy)",
            labels=["subscriber"],
        )
        for name, sub in service.dispatcher.status().items():
            lag.add_metric([name], _number(sub.get("lag")))
            failures.add_metric([name], _number(sub.get("failures")))
        yield lag
        yield failures
        deliveries = service.deliveries
        queued = GaugeMetricFamily(
            "hydraissue_webhook_queued_deliveries",
            "Deliveries queued for a webhook and not yet finished (its lag behind the "
            "webhooks subscriber)",
            labels=["webhook"],
        )
        for hook_id, hook in deliveries.status().items():
            queued.add_metric([hook_id], _number(hook.get("queued")))
        yield queued
        outcomes = CounterMetricFamily(
            "hydraissue_webhook_deliveries",
            "Webhook deliveries finished since start, by webhook and outcome "
            "(delivered, or failed after every attempt)",
            labels=["webhook", "outcome"],
        )
        for (hook_id, outcome), count in sorted(deliveries.outcomes.items()):
            outcomes.add_metric([hook_id, outcome], count)
        yield outcomes
        store = service.store
        yield SummaryMetricFamily(
            "hydraissue_event_store_write_seconds",
            "Group commits written since start (append and fsync of every log a batch "
            "touched) and the seconds they took",
            count_value=getattr(store, "write_batches", 0),
            sum_value=getattr(store, "write_seconds", 0.0),
        )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


METRICS = web.AppKey("metrics", Metrics)
routes = web.RouteTableDef()


def route_label(request: web.Request) -> str:
    """The matched route's template (``/api/v1/issues/{id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: every answer counted with the status the client got."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[METRICS]
        route = route_label(request)
        method = request.method if request.method in METHODS else "other"
        metrics.observe(route, method, status, time.perf_counter() - started)


def _unauthorized(message: str) -> web.Response:
    return web.Response(
        status=401,
        text=f"{message}\n",
        headers={"WWW-Authenticate": 'Bearer realm="hydraissue-metrics"'},
    )


@routes.get("/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    expected = request.app[CONFIG].metrics_token
    if not expected:
        raise web.HTTPNotFound()  # off: the same answer as any path that is not there
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token; send Authorization: Bearer <metrics_token>")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return _unauthorized("invalid bearer token; check metrics_token in the server's config")
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def listening(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, after the storage: count committed events from the start on."""
    service = app.get(SERVICE)
    if service is not None:
        service.store.listen(app[METRICS].committed)
    yield


def install(app: web.Application) -> None:
    """The registry, the route and the commit listener (the middleware is in the
    app's list: it must be the outermost)."""
    app[METRICS] = Metrics(app)
    app.add_routes(routes)
    app.cleanup_ctx.append(listening)
