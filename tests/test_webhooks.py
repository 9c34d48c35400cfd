"""Webhooks: registration, payloads and signatures, delivery rules, safety.

Every receiver is a real aiohttp server on 127.0.0.1 (so these tests allow private
targets, except the ones about refusing them). Signatures are checked by independent
code: ``hmac`` for X-Signature-256 and the ``standardwebhooks`` package for the
Standard Webhooks headers.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import hashlib
import hmac
import itertools
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook as StandardWebhook

from hydraissue import __version__
from hydraissue.config import Config
from hydraissue.delivery import Attempt, Delivery, Journal, Policy
from tests.conftest import AUTH, ClientFactory, settled, start_lan_server, stop
from web.app import create_app
from web.keys import SERVICE

Client = TestClient[Any, web.Application]
FAST = Policy(timeout=2.0, attempts=3, waits=(0.05, 0.1))


@pytest.fixture
def lan_config(config: Config) -> Config:
    return dataclasses.replace(config, webhooks_allow_private_targets=True)


@pytest.fixture
async def lan(aiohttp_client: ClientFactory, lan_config: Config) -> Client:
    return await aiohttp_client(create_app(lan_config, delivery_policy=FAST))


async def register(client: Client, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    resp = await client.post("/api/v1/webhooks", json=body, headers=AUTH)
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": "t", **fields}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


# -- registrations -------------------------------------------------------------------------


async def test_register_list_change_and_remove(lan: Client, receivers: Any) -> None:
    receiver = await receivers()
    made = await register(
        lan,
        {"url": receiver.url, "events": ["issue.created"], "secret": "s3cret", "description": "ci"},
    )
    assert made["id"] == "wh_1" and made["has_secret"] is True and "secret" not in made
    assert made["active"] is True and made["projects"] == [] and made["created_at"]
    listed = await (await lan.get("/api/v1/webhooks", headers=AUTH)).json()
    assert [h["id"] for h in listed] == ["wh_1"] and "secret" not in listed[0]
    patched = await lan.patch(
        "/api/v1/webhooks/wh_1", json={"events": ["*"], "projects": ["alpha"]}, headers=AUTH
    )
    assert patched.status == 200
    assert (await patched.json())["events"] == ["*"]
    assert (await lan.delete("/api/v1/webhooks/wh_1", headers=AUTH)).status == 204
    assert (await lan.get("/api/v1/webhooks/wh_1", headers=AUTH)).status == 404
    assert (await lan.delete("/api/v1/webhooks/wh_1", headers=AUTH)).status == 404
    again = await register(lan, {"url": receiver.url, "events": ["*"]})
    assert again["id"] == "wh_2" and again["has_secret"] is False  # ids are never reused


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
        ({"url": "https://user:pw@example.com/x", "events": ["*"]}, "url"),
        ({"url": "https:///nohost", "events": ["*"]}, "url"),
        ({"url": "https://example.com/x", "events": ["issue.made"]}, "events"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x"}, "events"),
        ({"events": ["*"]}, "url"),
        ({"url": "https://example.com/x", "events": ["*"], "projects": "alpha"}, "projects"),
        ({"url": "https://example.com/x", "events": ["*"], "secret": 7}, "secret"),
        ({"url": "https://example.com/x", "events": ["*"], "colour": "red"}, "colour"),
    ],
)
async def test_a_bad_registration_names_the_field(
    lan: Client, body: dict[str, Any], field: str
) -> None:
    resp = await lan.post("/api/v1/webhooks", json=body, headers=AUTH)
    assert resp.status == 400
    error = await resp.json()
    assert set(error) == {"error", "code", "detail"} and error["error"].startswith(f"{field}:")


async def test_registrations_survive_a_restart(
    aiohttp_client: ClientFactory, lan_config: Config, receivers: Any
) -> None:
    receiver = await receivers()
    first = await aiohttp_client(create_app(lan_config, delivery_policy=FAST))
    await register(first, {"url": receiver.url, "events": ["issue.created"], "secret": "x"})
    await first.close()
    second = await aiohttp_client(create_app(lan_config, delivery_policy=FAST))
    listed = await (await second.get("/api/v1/webhooks", headers=AUTH)).json()
    assert [(h["id"], h["has_secret"]) for h in listed] == [("wh_1", True)]
    await create(second, title="after the restart")
    assert (await receiver.wait(1))[0].json["data"]["title"] == "after the restart"
    assert (lan_config.data_path / "webhooks.yaml").stat().st_mode & 0o077 == 0


async def feed_fifo(path: Path, data: bytes, timeout: float = 10.0) -> bool:
    """Write ``data`` to the FIFO at ``path`` once a reader has it open; False if none
    came."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)  # no reader yet
    os.set_blocking(fd, True)
    try:
        await asyncio.to_thread(os.write, fd, data)
    finally:
        os.close(fd)
    return True


async def test_start_up_does_not_wait_for_a_webhooks_journal(
    aiohttp_client: ClientFactory, lan_config: Config, receivers: Any
) -> None:
    """A dead receiver's backlog can make a journal hundreds of MB: journals are read in
    the background. Here the journal is a FIFO that holds its reader until the test
    writes it: the service starts and answers meanwhile; the delivery log waits."""
    receiver = await receivers()
    first = await aiohttp_client(create_app(lan_config, delivery_policy=FAST))
    hook = (await register(first, {"url": receiver.url, "events": ["issue.created"]}))["id"]
    await create(first, title="before")
    await first.app[SERVICE].deliveries.recorded(hook, 1)
    await first.close()
    path = lan_config.data_path / "subscribers" / "webhooks" / f"{hook}.yaml"
    kept = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    try:
        second = await asyncio.wait_for(
            aiohttp_client(create_app(lan_config, delivery_policy=FAST)), 10
        )
        assert (await second.get("/api/v1/health")).status == 200
    finally:
        fed = await feed_fifo(path, kept)  # (the old code's start-up was stuck reading it)
    assert fed
    journal = await second.app[SERVICE].deliveries.journal(hook)
    path.unlink()
    path.write_bytes(kept)  # a file again, for the appends to come
    assert [a.issue_id for a in journal.attempts] == [1]
    log = await (await second.get(f"/api/v1/webhooks/{hook}/deliveries", headers=AUTH)).json()
    assert [entry["issue_id"] for entry in log] == [1]
    await create(second, title="after")
    assert [c.json["data"]["title"] for c in await receiver.wait(2)] == ["before", "after"]


# -- payloads and signatures ---------------------------------------------------------------


async def test_payload_headers_and_both_signatures(lan: Client, receivers: Any) -> None:
    receiver = await receivers()
    secret = "a shared secret"
    await register(lan, {"url": receiver.url, "events": ["issue.created"], "secret": secret})
    issue = await create(lan, title="Signed", project="alpha")
    call = (await receiver.wait(1))[0]
    body = call.json
    assert set(body) == {"event", "timestamp", "data", "delivery_id"}
    assert body["event"] == "issue.created"
    assert body["data"] == issue  # the issue exactly as GET returns it
    assert body["timestamp"] == issue["created_at"][:19] + "Z"
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"HydraIssue/{__version__}"
    assert headers["webhook-id"] == body["delivery_id"]
    expected = hmac.new(secret.encode(), call.body, hashlib.sha256).hexdigest()
    assert headers["x-signature-256"] == f"sha256={expected}"
    verifier = StandardWebhook(base64.b64encode(secret.encode()).decode())
    assert verifier.verify(call.body, headers) == body  # raises on a bad signature


async def test_a_whsec_secret_is_used_as_standard_webhooks_defines_it(
    lan: Client, receivers: Any
) -> None:
    receiver = await receivers()
    key = base64.b64encode(b"sixteen byte key").decode()
    await register(lan, {"url": receiver.url, "events": ["*"], "secret": f"whsec_{key}"})
    await create(lan)
    call = (await receiver.wait(1))[0]
    headers = {k.lower(): v for k, v in call.headers.items()}
    StandardWebhook(f"whsec_{key}").verify(call.body, headers)
    expected = hmac.new(b"sixteen byte key", call.body, hashlib.sha256).hexdigest()
    assert headers["x-signature-256"] == f"sha256={expected}"


async def test_no_secret_no_signature(lan: Client, receivers: Any) -> None:
    receiver = await receivers()
    await register(lan, {"url": receiver.url, "events": ["*"]})
    await create(lan)
    headers = {k.lower() for k in (await receiver.wait(1))[0].headers}
    assert "x-signature-256" not in headers and "webhook-signature" not in headers
    assert "webhook-id" in headers


async def test_one_committed_event_is_one_delivery_with_the_finest_name(
    lan: Client, receivers: Any
) -> None:
    coarse, fine, everything = await receivers(), await receivers(), await receivers()
    await register(lan, {"url": coarse.url, "events": ["issue.updated"]})
    await register(lan, {"url": fine.url, "events": ["issue.status_changed", "issue.updated"]})
    await register(lan, {"url": everything.url, "events": ["*"]})
    issue = await create(lan)
    resp = await lan.patch(
        f"/api/v1/issues/{issue['id']}", json={"status": "groomed"}, headers=AUTH
    )
    assert resp.status == 200
    await lan.post(f"/api/v1/issues/{issue['id']}/comments", json={"text": "hi"}, headers=AUTH)
    await settled(lan)
    await coarse.wait(2)
    await fine.wait(2)
    await everything.wait(3)
    await asyncio.sleep(0.2)  # nothing more comes
    assert [c.json["event"] for c in coarse.calls] == ["issue.updated", "issue.updated"]
    assert [c.json["event"] for c in fine.calls] == ["issue.status_changed", "issue.updated"]
    assert [c.json["event"] for c in everything.calls] == [
        "issue.created",
        "issue.status_changed",
        "issue.commented",
    ]
    assert coarse.calls[0].json["changes"] == {"status": {"from": "open", "to": "groomed"}}
    assert "changes" not in coarse.calls[1].json


async def test_a_new_webhook_gets_only_what_is_committed_after_it(
    lan: Client, receivers: Any
) -> None:
    """Even when the subscriber hands it older events (it lagged, or repeats after a
    crash), a webhook is sent nothing from before its registration."""
    receiver = await receivers()
    for n in range(3):
        await create(lan, title=f"before {n}")
    await settled(lan)
    await register(lan, {"url": receiver.url, "events": ["*"]})
    service = lan.app[SERVICE]
    await service.deliveries.handle(await service.store.read_after(0, 100))
    await create(lan, title="after")
    calls = await receiver.wait(1)
    await settled(lan)
    assert [c.json["data"]["title"] for c in calls] == ["after"]


async def test_project_and_event_filters(lan: Client, receivers: Any) -> None:
    alpha, deletions = await receivers(), await receivers()
    await register(lan, {"url": alpha.url, "events": ["*"], "projects": ["alpha"]})
    await register(lan, {"url": deletions.url, "events": ["issue.deleted"]})
    await create(lan, project="beta")
    kept = await create(lan, project="alpha")
    assert (await lan.delete(f"/api/v1/issues/{kept['id']}", headers=AUTH)).status == 204
    await settled(lan)
    await alpha.wait(2)
    await deletions.wait(1)
    await asyncio.sleep(0.2)
    assert [(c.json["event"], c.json["data"]["project"]) for c in alpha.calls] == [
        ("issue.created", "alpha"),
        ("issue.deleted", "alpha"),
    ]
    assert [c.json["data"]["id"] for c in deletions.calls] == [kept["id"]]


async def test_each_webhook_delivers_in_event_order(lan: Client, receivers: Any) -> None:
    receiver = await receivers()
    await register(lan, {"url": receiver.url, "events": ["issue.commented"]})
    issue = await create(lan)
    await asyncio.gather(
        *(
            lan.post(f"/api/v1/issues/{issue['id']}/comments", json={"text": f"c{n}"}, headers=AUTH)
            for n in range(15)
        )
    )
    calls = await receiver.wait(15)
    ids = [c.json["data"]["comments"][-1]["id"] for c in calls]
    positions = [int(c.json["delivery_id"].split("_")[1]) for c in calls]
    assert positions == sorted(positions) and ids == sorted(ids)


async def test_queued_deliveries_resume_after_kill_9(tmp_path: Path, receivers: Any) -> None:
    """The receiver holds the first delivery; five more are queued behind it when the
    server is killed. The next server delivers every one, in order, under the ids the
    first one gave them."""
    receiver = await receivers(script=["hang"])
    first = await start_lan_server(tmp_path)
    async with aiohttp.ClientSession(first.url, headers=AUTH) as api:
        body = {"url": receiver.url, "events": ["issue.created"], "secret": "s3cret"}
        async with api.post("/api/v1/webhooks", json=body) as resp:
            assert resp.status == 201
        for n in range(6):
            async with api.post("/api/v1/issues", json={"title": f"issue {n}"}) as resp:
                assert resp.status == 201
        await receiver.wait(1)
    assert stop(first, signal.SIGKILL) == -signal.SIGKILL
    held = receiver.calls[0].json["delivery_id"]

    second = await start_lan_server(tmp_path)
    try:
        calls = await receiver.wait(7, timeout=15)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert len(receiver.calls) == 7
    finally:
        stop(second, signal.SIGTERM)
    delivered = [(c.json["data"]["id"], c.json["delivery_id"]) for c in calls[1:]]
    assert [issue for issue, _ in delivered] == [1, 2, 3, 4, 5, 6]
    assert delivered[0][1] == held  # the held one again, under the same id
    assert all(c.headers["webhook-id"] == c.json["delivery_id"] for c in calls)
    assert len({d for _, d in delivered}) == 6


# -- delivery rules ----------------------------------------------------------------------


async def test_a_failing_receiver_gets_three_attempts_one_then_two_seconds_apart(
    aiohttp_client: ClientFactory, lan_config: Config, receivers: Any
) -> None:
    client = await aiohttp_client(create_app(lan_config))  # the seed's real policy
    receiver = await receivers(default=500)
    hook = await register(client, {"url": receiver.url, "events": ["issue.created"]})
    await create(client)
    calls = await receiver.wait(3, timeout=15)
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert 0.9 <= gaps[0] <= 1.6 and 1.9 <= gaps[1] <= 2.6, gaps
    assert len({c.json["delivery_id"] for c in calls}) == 1  # the same delivery each time
    await client.app[SERVICE].deliveries.recorded(hook["id"], 3)
    await asyncio.sleep(0.3)  # nothing more arrives
    assert len(receiver.calls) == 3
    log = await (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=AUTH)).json()
    assert [a["attempt"] for a in log] == [3, 2, 1]  # newest first
    assert all(a["status"] == 500 and a["error"] == "HTTP 500" for a in log)


async def test_a_hanging_receiver_times_out_after_5_seconds_and_slows_nothing_else(
    aiohttp_client: ClientFactory, lan_config: Config, receivers: Any
) -> None:
    client = await aiohttp_client(create_app(lan_config))
    hanging, healthy = await receivers(script=["hang"]), await receivers()
    await register(client, {"url": hanging.url, "events": ["issue.created"]})
    await register(client, {"url": healthy.url, "events": ["issue.created"]})
    started = time.monotonic()
    await create(client, title="one")
    await healthy.wait(1, timeout=2)  # the healthy one is not held up
    assert time.monotonic() - started < 2
    read = time.monotonic()
    assert (await client.get("/api/v1/issues", headers=AUTH)).status == 200
    assert time.monotonic() - read < 1  # nor is the API
    calls = await hanging.wait(2, timeout=12)
    assert 4.8 <= calls[1].at - calls[0].at <= 6.5  # timed out at 5 s, waited 1 s, again
    await client.app[SERVICE].deliveries.recorded("wh_1", 2)
    log = await (await client.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
    first = log[-1]
    assert first["status"] is None and "5 s" in first["error"]
    assert 4900 <= first["duration_ms"] <= 6000
    assert log[0]["status"] == 200


async def test_a_webhook_failing_long_enough_is_switched_off(
    aiohttp_client: ClientFactory, lan_config: Config, receivers: Any
) -> None:
    policy = dataclasses.replace(FAST, disable_after=0.0)
    client = await aiohttp_client(create_app(lan_config, delivery_policy=policy))
    receiver = await receivers(default=503)
    await register(client, {"url": receiver.url, "events": ["issue.created"]})
    await create(client, title="first")
    await receiver.wait(3)
    for _ in range(100):
        hook = await (await client.get("/api/v1/webhooks/wh_1", headers=AUTH)).json()
        if not hook["active"]:
            break
        await asyncio.sleep(0.02)
    assert hook["active"] is False
    assert (
        "every delivery failed" in hook["disabled_reason"] and "HTTP 503" in hook["disabled_reason"]
    )
    await create(client, title="while off")
    await settled(client)
    await asyncio.sleep(0.2)
    assert len(receiver.calls) == 3  # nothing more sent
    receiver.default = 200
    resp = await client.patch("/api/v1/webhooks/wh_1", json={"active": True}, headers=AUTH)
    assert (await resp.json())["disabled_reason"] is None
    await create(client, title="back on")
    calls = await receiver.wait(4)
    assert calls[-1].json["data"]["title"] == "back on"


async def test_redeliver_and_ping(lan: Client, receivers: Any) -> None:
    receiver = await receivers()
    await register(lan, {"url": receiver.url, "events": ["issue.created"], "secret": "k"})
    await create(lan)
    first = (await receiver.wait(1))[0]
    delivery_id = first.json["delivery_id"]
    resp = await lan.post(f"/api/v1/webhooks/wh_1/deliveries/{delivery_id}/redeliver", headers=AUTH)
    assert resp.status == 202
    again = (await receiver.wait(2))[1]
    assert again.body == first.body  # the same delivery, the same id
    missing = await lan.post("/api/v1/webhooks/wh_1/deliveries/whd_9_9/redeliver", headers=AUTH)
    assert missing.status == 404
    pong = await lan.post("/api/v1/webhooks/wh_1/ping", headers=AUTH)
    result = await pong.json()
    assert result["ok"] is True and result["status"] == 200
    ping = (await receiver.wait(3))[2]
    assert ping.json["event"] == "ping" and ping.json["data"]["webhook"]["id"] == "wh_1"


# -- safety ------------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://10.1.2.3/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.7/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fd00:ec2::254]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://240.0.0.1/hook",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_targets_are_refused_by_default(client: Client, url: str) -> None:
    resp = await client.post("/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=AUTH)
    assert resp.status == 400, await resp.text()
    error = await resp.json()
    assert error["error"].startswith("url: refused")


async def test_a_public_literal_address_is_accepted(client: Client) -> None:
    made = await register(client, {"url": "https://93.184.216.34/hook", "events": ["*"]})
    assert made["url"] == "https://93.184.216.34/hook"


class Rebinding(AbstractResolver):
    """A resolver the test controls: a public address first, loopback afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        address = "93.184.216.34" if self.calls == 1 else "127.0.0.1"
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


async def test_dns_rebinding_is_refused_at_connect_time(
    aiohttp_client: ClientFactory, config: Config, receivers: Any
) -> None:
    receiver = await receivers()
    resolver = Rebinding()
    client = await aiohttp_client(create_app(config, delivery_policy=FAST, resolver=resolver))
    assert receiver.server is not None
    url = f"http://rebind.test:{receiver.server.port}/hook"
    await register(client, {"url": url, "events": ["issue.created"]})  # public at first
    await create(client)
    for _ in range(200):
        log = await (await client.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
        if len(log) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(log) == 3 and all("127.0.0.1 is a loopback address" in a["error"] for a in log)
    assert receiver.calls == []  # the address actually dialled was checked


async def test_an_allow_list_lifts_the_rule_for_its_targets(
    aiohttp_client: ClientFactory, config: Config, receivers: Any
) -> None:
    receiver = await receivers()
    allowed = dataclasses.replace(config, webhooks_allowed_targets=("127.0.0.0/8",))
    client = await aiohttp_client(create_app(allowed, delivery_policy=FAST))
    await register(client, {"url": receiver.url, "events": ["*"]})
    refused = await client.post(
        "/api/v1/webhooks", json={"url": "http://10.0.0.1/x", "events": ["*"]}, headers=AUTH
    )
    assert refused.status == 400
    await create(client)
    await receiver.wait(1)


async def test_redirects_are_not_followed(lan: Client, receivers: Any) -> None:
    target = await receivers()
    bouncer = await receivers(default=307)
    await register(lan, {"url": bouncer.url, "events": ["issue.created"]})
    await create(lan)
    await bouncer.wait(3)
    await lan.app[SERVICE].deliveries.recorded("wh_1", 3)
    assert target.calls == []
    log = await (await lan.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
    assert all(a["status"] == 307 for a in log)


# -- the journal --------------------------------------------------------------------


def _delivery(number: int) -> Delivery:
    return Delivery(
        id=f"whd_{number}_1",
        webhook="wh_1",
        event="issue.created",
        issue_id=number,
        pos=number,
        body=b'{"event":"issue.created"}',
        queued_at="2026-03-04T12:00:00Z",
    )


def _attempt(delivery: Delivery, status: int) -> Attempt:
    return Attempt(delivery.id, delivery.event, delivery.issue_id, 1, status, 1.5, None, "x")


async def test_a_compacted_journal_reads_back_as_it_was_and_keeps_a_racing_queue(
    tmp_path: Path,
) -> None:
    """Compaction rewrites the journal in a thread; a delivery queued while it waits for
    the journal's lock is in the rewrite, so it is still queued after a restart."""
    journal = Journal(tmp_path, "wh_1")
    first = [_delivery(n) for n in range(1, 6)]
    await journal.queue(first)
    for delivery in first[:3]:
        journal.attempted(_attempt(delivery, 200))
        await journal.finish(delivery)
    late = _delivery(6)
    queueing = asyncio.create_task(journal.queue([late]))
    await asyncio.sleep(0)  # the queue holds the lock, its append in a thread
    await journal.compact()
    await queueing

    again = Journal(tmp_path, "wh_1")
    again.load()
    assert [d.id for d in again.pending] == [d.id for d in (*first[3:], late)]
    assert [a.delivery_id for a in again.attempts] == [d.id for d in first[:3]]
    assert list(again.recent) == [d.id for d in (*first, late)]
