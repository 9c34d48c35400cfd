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

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from hydraissue.model import Event
from web.keys import CONFIG, SERVICE, UPDATE_STATUS
from web.tokens import matches

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404 or 405)
# Seconds: from a cached page (well under a millisecond) to a large upload.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestCounts(Collector):
    """Requests answered and their latency, kept as plain numbers and turned into
    metric families at scrape time.

    prometheus-client's labelled children take a lock per update, two per request
    (a tenth of a get-by-id's time with the label lookup); one event loop updates
    these, so a dict and a list of bucket counts per route are enough.
    """

    def __init__(self) -> None:
        self.answered: dict[tuple[str, str, int], int] = {}
        # (route, method) -> a count per bucket (not cumulative), +Inf last, then the sum
        self.latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.answered[key] = self.answered.get(key, 0) + 1
        counts = self.latency.get(key[:2])
        if counts is None:
            counts = self.latency[key[:2]] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1  # a bound counts what equals it
        counts[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        answered = CounterMetricFamily(
            "hydraissue_http_requests",
            "HTTP requests answered, by route template, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self.answered.items()):
            answered.add_metric([route, method, str(status)], count)
        yield answered
        latency = HistogramMetricFamily(
            "hydraissue_http_request_duration_seconds",
            "Time from a request's arrival at the app to its answer, by route template",
            labels=["route", "method"],
        )
        bounds = [str(b) for b in BUCKETS] + ["+Inf"]  # "0.001" … "30.0", as Go writes them
        for labels, counts in sorted(self.latency.items()):
            running, buckets = 0.0, []
            for bound, in_bucket in zip(bounds, counts[:-1], strict=True):
                running += in_bucket
                buckets.append((bound, running))
            latency.add_metric(list(labels), buckets, sum_value=counts[-1])
        yield latency


class Metrics:
    """The app's registry and the metrics updated as requests and commits happen."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestCounts()
        self.registry.register(self.requests)
        self.events = Counter(
            "hydraissue_events_appended",
            "Events committed to the event store since start, by type",
            ["type"],
            registry=self.registry,
        )
        self.registry.register(ServiceCollector(app))

    def answered(
        self, request: web.Request, status: int, seconds: float, route: str | None = None
    ) -> None:
        """One answer, by its route's template (never the raw path), with the time from
        its arrival to its last byte written (``route``: the template of an answer given
        before routing, web/lane.py)."""
        method = request.method if request.method in METHODS else "other"
        self.requests.observe(route or route_label(request), method, status, seconds)

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
        update_status = self.app.get(UPDATE_STATUS)
        checks = update_status().get("checks", 0) if update_status is not None else 0
        yield CounterMetricFamily(
            "hydraissue_update_checks",
            "Checks for a newer release made by this process (serve's automatic updates)",
            value=_number(checks),
        )
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
    """The matched route's template (``/api/v1/issues/{id}``), never the raw path; a
    request answered before routing (a 503 while shutting down) or by no route is
    ``unmatched``."""
    try:
        resource = request.match_info.route.resource
    except (AssertionError, AttributeError):  # aiohttp's "not routed (yet)"
        return UNMATCHED
    return resource.canonical if resource is not None else UNMATCHED


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
    if not matches(token.strip(), expected):
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
    """The registry, the route and the commit listener (answers are counted by the
    app's access logger, web/accesslog.py)."""
    app[METRICS] = Metrics(app)
    app.add_routes(routes)
    app.cleanup_ctx.append(listening)
