"""The helper process that makes the webhooks' HTTP attempts (hydraissue/sender.py).

The server decides what is sent; the helper only sends it. These tests check what that
split must keep: attempts go through the helper, a helper that dies costs one failed
attempt (retried by the usual policy) and is replaced, a live change of the target
policy reaches it (the address dialled is still checked, now in the helper), and it
never outlives the server, not even a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from hydraissue.config import Config
from hydraissue.delivery import Policy
from hydraissue.sender import EXITED, HelperProcessSender
from hydraissue.targets import TargetPolicy
from tests.conftest import AUTH, ClientFactory, start_lan_server, stop
from web.app import create_app
from web.keys import SERVICE

FAST = Policy(timeout=2.0, attempts=3, waits=(0.05, 0.1))


def helper_of(app: Any) -> HelperProcessSender:
    sender = app[SERVICE].deliveries.sender
    assert isinstance(sender, HelperProcessSender)
    return sender


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def create(client: Any, title: str = "t") -> None:
    resp = await client.post("/api/v1/issues", json={"title": title}, headers=AUTH)
    assert resp.status == 201, await resp.text()


async def test_attempts_go_through_the_helper_which_ends_with_the_server(
    aiohttp_client: ClientFactory, config: Config, receivers: Any
) -> None:
    lan = dataclasses.replace(config, webhooks_allow_private_targets=True)
    client = await aiohttp_client(create_app(lan, delivery_policy=FAST))
    sender = helper_of(client.app)
    assert sender.pid is None  # no webhook has sent anything yet: no helper
    receiver = await receivers()
    body = {"url": receiver.url, "events": ["issue.created"]}
    assert (await client.post("/api/v1/webhooks", json=body, headers=AUTH)).status == 201
    await create(client)
    (call,) = await receiver.wait(1)
    assert call.headers["User-Agent"].startswith("HydraIssue/")
    pid = sender.pid
    assert pid is not None and pid in children(os.getpid())
    await client.app[SERVICE].deliveries.recorded("wh_1", 1)
    log = await (await client.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
    assert log[0]["status"] == 200 and log[0]["duration_ms"] > 0
    await client.close()
    assert await gone(pid)


async def test_a_helper_that_dies_costs_one_attempt_and_is_replaced(
    aiohttp_client: ClientFactory, config: Config, receivers: Any
) -> None:
    lan = dataclasses.replace(config, webhooks_allow_private_targets=True)
    client = await aiohttp_client(create_app(lan, delivery_policy=FAST))
    receiver = await receivers(script=["hang"])
    body = {"url": receiver.url, "events": ["issue.created"]}
    assert (await client.post("/api/v1/webhooks", json=body, headers=AUTH)).status == 201
    await create(client)
    await receiver.wait(1)  # the first attempt is in the helper, waiting for an answer
    sender = helper_of(client.app)
    first = sender.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    calls = await receiver.wait(2)
    assert calls[0].json["delivery_id"] == calls[1].json["delivery_id"]
    await client.app[SERVICE].deliveries.recorded("wh_1", 2)
    log = await (await client.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
    assert [(a["attempt"], a["status"], a["error"]) for a in log] == [
        (2, 200, None),
        (1, None, EXITED),
    ]
    assert sender.started == 2 and sender.pid not in (None, first)


async def test_a_live_policy_change_reaches_the_helper(
    aiohttp_client: ClientFactory, config: Config, receivers: Any
) -> None:
    lan = dataclasses.replace(config, webhooks_allow_private_targets=True)
    client = await aiohttp_client(create_app(lan, delivery_policy=FAST))
    receiver = await receivers()
    body = {"url": receiver.url, "events": ["issue.created"]}
    assert (await client.post("/api/v1/webhooks", json=body, headers=AUTH)).status == 201
    await create(client, "allowed")
    await receiver.wait(1)
    deliveries = client.app[SERVICE].deliveries
    deliveries.set_target_policy(TargetPolicy())  # private targets refused from now on
    await create(client, "refused")
    await deliveries.recorded("wh_1", 4)
    log = await (await client.get("/api/v1/webhooks/wh_1/deliveries", headers=AUTH)).json()
    assert len(receiver.calls) == 1  # the address was checked again, in the helper
    assert all("127.0.0.1 is a loopback address" in a["error"] for a in log[:3]), log
    assert helper_of(client.app).started == 1  # the same helper, told the new policy


async def test_the_helper_does_not_outlive_a_killed_server(tmp_path: Path, receivers: Any) -> None:
    receiver = await receivers(script=["hang"])
    server = await start_lan_server(tmp_path)
    async with aiohttp.ClientSession(server.url, headers=AUTH) as api:
        body = {"url": receiver.url, "events": ["issue.created"]}
        async with api.post("/api/v1/webhooks", json=body) as resp:
            assert resp.status == 201
        async with api.post("/api/v1/issues", json={"title": "held"}) as resp:
            assert resp.status == 201
        await receiver.wait(1)  # an attempt in flight, in the helper
    (helper,) = children(server.proc.pid)
    assert stop(server, signal.SIGKILL) == -signal.SIGKILL
    assert await gone(helper)


def test_a_policy_survives_the_pipe_to_the_helper() -> None:
    """The helper is told the policy as JSON (``as_config``) and builds it again."""
    policy = TargetPolicy.from_config(False, ["Hooks.LAN.", "10.0.0.0/8", "fd00::/8"])
    sent = orjson.loads(orjson.dumps({"policy": policy.as_config()}))
    assert TargetPolicy.from_config(*sent["policy"]) == policy
