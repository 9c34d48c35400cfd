"""GET /metrics: off by default, its own bearer token, Prometheus text that parses,
route templates as labels, and nothing secret or personal in it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from hydraissue.config import Config
from hydraissue.delivery import Policy
from tests.conftest import ADMIN_TOKEN, API_TOKEN, AUTH, ClientFactory, settled
from web.app import create_app
from web.metrics import METRICS

Client = TestClient[Any, web.Application]
METRICS_TOKEN = "test-metrics-token-5f2c"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
TITLE = "Zebra-crossing lights dead on Kastanienallee"


@pytest.fixture
def metrics_config(config: Config) -> Config:
    return dataclasses.replace(config, metrics_token=METRICS_TOKEN)


@pytest.fixture
async def scraped(aiohttp_client: ClientFactory, metrics_config: Config) -> Client:
    return await aiohttp_client(create_app(metrics_config))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: Client) -> tuple[str, Samples]:
    resp = await client.get("/metrics", headers=SCRAPE)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def create(client: Client, title: str = TITLE) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": title}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_off_by_default(client: Client) -> None:
    for headers in ({}, AUTH, {"Authorization": "Bearer "}):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 404


async def test_only_the_metrics_token_opens_it(scraped: Client) -> None:
    for headers, why in (
        ({}, "missing bearer token"),
        ({"Authorization": f"Basic {METRICS_TOKEN}"}, "missing bearer token"),
        ({"Authorization": f"Bearer {API_TOKEN}"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {METRICS_TOKEN}x"}, "invalid bearer token"),
    ):
        resp = await scraped.get("/metrics", headers=headers)
        assert resp.status == 401, headers
        assert why in await resp.text()
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await scraped.get("/metrics", headers=SCRAPE)
    assert resp.status == 200


async def test_counters_move_and_labels_are_route_templates(scraped: Client) -> None:
    _, before = await scrape(scraped)
    issue = await create(scraped)
    for _ in range(3):
        resp = await scraped.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)
        assert resp.status == 200
    assert (await scraped.get("/api/v1/issues/999999", headers=AUTH)).status == 404
    assert (await scraped.get("/no/such/page/42")).status == 404
    await settled(scraped)
    text, after = await scrape(scraped)

    one = "/api/v1/issues/{id}"
    requests = "hydraissue_http_requests_total"
    assert value(after, requests, route=one, method="GET", status="200") == 3
    assert value(after, requests, route=one, method="GET", status="404") == 1
    assert value(after, requests, route="/api/v1/issues", method="POST", status="201") == 1
    assert value(after, requests, route="unmatched", method="GET", status="404") == 1
    # the scrape before this one was counted too, under its own route
    assert value(after, requests, route="/metrics", method="GET", status="200") >= 1
    count = "hydraissue_http_request_duration_seconds_count"
    assert value(after, count, route=one, method="GET") == 4
    assert value(after, "hydraissue_http_request_duration_seconds_bucket", route=one,
                 method="GET", le="+Inf") == 4  # fmt: skip
    # raw paths never become labels
    assert f"/api/v1/issues/{issue['id']}" not in text
    # (as labels: a value such as 0.0018909999998868443 may hold the digits 999999)
    assert "/no/such/page" not in text and "/999999" not in text

    created = "hydraissue_events_appended_total"
    assert (
        value(after, created, type="issue.created")
        == value(before, created, type="issue.created") + 1
    )
    assert value(after, "hydraissue_issues", status=issue["status"]) == 1
    assert value(after, "hydraissue_event_store_position") >= 1
    assert value(after, "hydraissue_event_store_write_seconds_count") >= 1
    assert value(after, "hydraissue_event_store_write_seconds_sum") > 0
    for subscriber in ("issue-files", "webhooks", "uploads-cleanup", "nim-audit"):
        assert value(after, "hydraissue_subscriber_lag_events", subscriber=subscriber) == 0
        assert ("hydraissue_subscriber_lag_events", (("subscriber", subscriber),)) in after
    assert ("hydraissue_update_checks_total", ()) in after


async def test_no_token_or_issue_content_in_the_output(scraped: Client) -> None:
    issue = await create(scraped)
    resp = await scraped.post(
        f"/api/v1/issues/{issue['id']}/comments",
        json={"text": "secret-comment-text", "author": "Jolanta"},
        headers=AUTH,
    )
    assert resp.status == 201, await resp.text()
    await scraped.get("/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    await scraped.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    await settled(scraped)
    text, _ = await scrape(scraped)
    for secret in (METRICS_TOKEN, API_TOKEN, ADMIN_TOKEN, TITLE, "Kastanienallee"):
        assert secret not in text
    assert "secret-comment-text" not in text and "Jolanta" not in text


async def test_two_apps_do_not_share_metrics(
    aiohttp_client: ClientFactory, metrics_config: Config, tmp_path: Any
) -> None:
    first = await aiohttp_client(create_app(metrics_config))
    other_dir = tmp_path / "other-data"
    second = await aiohttp_client(
        create_app(dataclasses.replace(metrics_config, data_dir=str(other_dir)))
    )
    assert first.app[METRICS].registry is not second.app[METRICS].registry
    await create(first)
    await create(first)
    _, one = await scrape(first)
    _, two = await scrape(second)
    posts = {"route": "/api/v1/issues", "method": "POST", "status": "201"}
    assert value(one, "hydraissue_http_requests_total", **posts) == 2
    assert value(two, "hydraissue_http_requests_total", **posts) == 0
    assert value(two, "hydraissue_events_appended_total", type="issue.created") == 0


@pytest.fixture
async def receiver() -> AsyncIterator[TestServer]:
    """A webhook receiver on 127.0.0.1: /ok answers 200, /broken 500."""
    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/broken", broken)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def broken(_request: web.Request) -> web.Response:
    return web.Response(status=500, text="broken")


async def test_webhook_deliveries_by_outcome_and_queue(
    aiohttp_client: ClientFactory, metrics_config: Config, receiver: TestServer
) -> None:
    lan = dataclasses.replace(metrics_config, webhooks_allow_private_targets=True)
    client = await aiohttp_client(
        create_app(lan, delivery_policy=Policy(timeout=2.0, attempts=2, waits=(0.01,)))
    )
    hooks = {}
    for name in ("ok", "broken"):
        resp = await client.post(
            "/api/v1/webhooks",
            json={"url": str(receiver.make_url(f"/{name}")), "events": ["*"]},
            headers=AUTH,
        )
        assert resp.status == 201, await resp.text()
        hooks[name] = (await resp.json())["id"]
    await create(client)
    await create(client)
    deliveries = "hydraissue_webhook_deliveries_total"
    deadline = time.monotonic() + 10
    while True:  # the scrape is the seam: wait until both workers finished both
        text, samples = await scrape(client)
        ok = value(samples, deliveries, webhook=hooks["ok"], outcome="delivered")
        failed = value(samples, deliveries, webhook=hooks["broken"], outcome="failed")
        if (ok, failed) == (2, 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (ok, failed) == (2, 2)
    assert value(samples, deliveries, webhook=hooks["ok"], outcome="failed") == 0
    for hook_id in hooks.values():
        assert value(samples, "hydraissue_webhook_queued_deliveries", webhook=hook_id) == 0
        assert ("hydraissue_webhook_queued_deliveries", (("webhook", hook_id),)) in samples
    assert str(receiver.make_url("/ok")) not in text  # webhook URLs are not labels
