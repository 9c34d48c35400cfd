"""The public runbook stays generic; this deployment's notes are the admin's only."""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import ADMIN_TOKEN, AUTH, REPO, ClientFactory
from web.app import create_app

Client = TestClient[Any, web.Application]
NOTES = """# prod-eu-1

- Host: `hydra-prod-eu-1.internal`, public address 198.51.100.23
- Snapshots: daily 02:00-06:00 UTC, kept 7 days
- Data: `/root/.hydraissue/data`

<script>alert(1)</script>
"""
# What only a deployment knows, none of which the public runbook may carry.
SEED_DETAILS = ("hydrastreamingmonitor", "hydraexperiencenet", "/root", "Hetzner Cloud Console")


def public_addresses(text: str) -> list[str]:
    found = []
    for raw in re.findall(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", text):
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            continue
        documentation = any(
            address in ipaddress.ip_network(net)
            for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
        )
        if address.is_global and not documentation:
            found.append(raw)
    return found


async def test_the_public_runbook_carries_no_deployment_details(client: Client) -> None:
    resp = await client.get("/api/v1/runbook")
    assert resp.status == 200
    text = await resp.text()
    assert public_addresses(text) == []
    assert [d for d in SEED_DETAILS if d in text] == []
    assert "deployment_notes" in text  # it says where those details go instead


async def notes_client(aiohttp_client: ClientFactory, config: Config, tmp_path: Path) -> Client:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    return await aiohttp_client(
        create_app(dataclasses.replace(config, deployment_notes=str(notes)))
    )


async def test_admin_runbook_needs_the_admin(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path
) -> None:
    client = await notes_client(aiohttp_client, config, tmp_path)
    resp = await client.get("/admin/runbook", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    resp = await client.get("/admin/runbook", headers=AUTH, allow_redirects=False)
    assert resp.status == 401  # the api token is not the admin's
    assert "198.51.100.23" not in await resp.text()


async def test_admin_runbook_shows_the_notes_file(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path
) -> None:
    client = await notes_client(aiohttp_client, config, tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    resp = await client.get("/admin/runbook", headers=admin)
    assert resp.status == 200
    page = await resp.text()
    assert "<h1>prod-eu-1</h1>" in page
    assert "198.51.100.23" in page and "/root/.hydraissue/data" in page
    assert "<script>alert(1)</script>" not in page  # Markdown's HTML is sanitised
    assert 'href="/admin/stats"' in page  # inside the admin layout
    public = await (await client.get("/api/v1/runbook")).text()
    assert "198.51.100.23" not in public

    (tmp_path / "notes.md").write_text("# changed\n")  # read on every request
    assert "<h1>changed</h1>" in await (await client.get("/admin/runbook", headers=admin)).text()
    (tmp_path / "notes.md").unlink()
    page = await (await client.get("/admin/runbook", headers=admin)).text()
    assert "cannot be read" in page


async def test_admin_runbook_without_notes_says_how_to_add_them(client: Client) -> None:
    resp = await client.get("/admin/runbook", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200
    assert "set deployment_notes in the config" in await resp.text()


def test_the_systemd_unit_has_the_hardening_and_the_restart() -> None:
    unit = configparser.ConfigParser(interpolation=None)  # strict: a key set twice fails
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep case
    unit.read_string((REPO / "deploy" / "hydraissue.service").read_text())
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["User"] == "hydraissue" and service["Group"] == "hydraissue"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    start = service["ExecStart"].split()
    assert start[1:] == [
        "serve",
        "--config",
        "/etc/hydraissue/config.yaml",
        "--data-dir",
        "/var/lib/hydraissue",
    ]
    assert "/var/lib/hydraissue" in service["ReadWritePaths"].split()
    assert "HYDRA_AUTO_UPDATE" not in service.get("Environment", "")  # optional: a comment
    text = (REPO / "deploy" / "hydraissue.service").read_text()
    assert "#Environment=HYDRA_AUTO_UPDATE=off" in text
    assert unit["Install"]["WantedBy"] == "multi-user.target"
