"""Docs that cannot drift: these fail when a key, event or route goes undocumented."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import yaml

from events.model import EVENT_TYPES
from hydraissue.config import ENV, KEYS, SECTIONS, Config, check
from tests.conftest import AUTH, ClientFactory, free_port
from web import api, feed, insight_api, webhooks_api
from web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
EXAMPLE = (ROOT / "config.yaml.example").read_text()


def test_every_event_type_is_documented() -> None:
    missing = [t for t in EVENT_TYPES if f"`{t}`" not in ARCHITECTURE]
    assert not missing, f"document these event types in docs/architecture.md: {missing}"


def test_example_config_documents_every_key_and_loads() -> None:
    example = yaml.safe_load(EXAMPLE)
    assert set(example) == set(KEYS)
    for section, keys in SECTIONS.items():
        assert set(example[section]) == set(keys), f"document every {section}.* key"
    check(example, "config.yaml.example")  # and it is a valid config as it stands


def test_runbook_names_every_environment_variable() -> None:
    assert [name for name in ENV if name not in RUNBOOK] == []


def test_runbook_lists_every_api_route() -> None:
    listed = set(re.findall(r"\| (GET|POST|PATCH|PUT|DELETE) \| (/api/v1/\S+) \|", RUNBOOK))
    registered = {
        (route.method, route.path)  # type: ignore[attr-defined]
        for route in [*api.routes, *feed.routes, *webhooks_api.routes, *insight_api.routes]
        if route.method != "HEAD"  # type: ignore[attr-defined]
    }
    assert registered - listed == set(), "add these routes to docs/runbook.md"


def test_runbook_has_the_troubleshooting_steps() -> None:
    for heading in ("### Service won't start", "### Issues not showing up", "### API returns 401"):
        assert heading in RUNBOOK
    assert "hydraissue replay" in RUNBOOK and "hydraissue verify" in RUNBOOK


def section(title: str) -> str:
    start = RUNBOOK.index(f"\n## {title}\n")
    end = RUNBOOK.find("\n## ", start + 1)
    return RUNBOOK[start : end if end > 0 else None]


def test_the_webhooks_section_shows_every_step() -> None:
    text = section("Webhooks")
    for step in ("POST", "-X DELETE", "/deliveries", "/ping", "X-Signature-256", "webhook-id"):
        assert step in text
    assert "allow_private_targets" in text and "allowed_targets" in text


async def test_the_runbooks_receiver_verifies_a_real_delivery(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path
) -> None:
    """The receiver example, as written (on a free port), gets a signed delivery from
    the app and says it is ok."""
    [code] = re.findall(r"```python\n(.*?)```", section("Webhooks"), re.DOTALL)
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(code.replace("9000", str(port)))
    receiver = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        lan = dataclasses.replace(config, webhooks_allow_private_targets=True)
        client = await aiohttp_client(create_app(lan))
        secret = re.search(r'SECRET = b"(.*?)"', code)
        assert secret is not None
        body = {"url": f"http://127.0.0.1:{port}/", "events": ["*"], "secret": secret[1]}
        assert (await client.post("/api/v1/webhooks", json=body, headers=AUTH)).status == 201
        for _ in range(100):  # until the receiver listens
            ping = await (await client.post("/api/v1/webhooks/wh_1/ping", headers=AUTH)).json()
            if ping["ok"]:
                break
            await asyncio.sleep(0.05)
        assert ping["status"] == 204
        created = await client.post("/api/v1/issues", json={"title": "hello"}, headers=AUTH)
        assert created.status == 201
        assert receiver.stdout is not None
        lines = [await asyncio.to_thread(receiver.stdout.readline) for _ in range(2)]
    finally:
        receiver.kill()
        receiver.communicate()
    assert lines[0].decode().split()[0::2] == ["ping", "ok"]
    assert lines[1].decode().split() == ["issue.created", "whd_1_1", "ok"]
