"""Docs that cannot drift: these fail when a key, event or route goes undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from events.model import EVENT_TYPES
from hydraissue.config import ENV, KEYS
from web import api, feed

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


def test_runbook_names_every_environment_variable() -> None:
    assert [name for name in ENV if name not in RUNBOOK] == []


def test_runbook_lists_every_api_route() -> None:
    listed = set(re.findall(r"\| (GET|POST|PATCH|PUT|DELETE) \| (/api/v1/\S+) \|", RUNBOOK))
    registered = {
        (route.method, route.path)  # type: ignore[attr-defined]
        for route in [*api.routes, *feed.routes]
        if route.method != "HEAD"  # type: ignore[attr-defined]
    }
    assert registered - listed == set(), "add these routes to docs/runbook.md"


def test_runbook_has_the_troubleshooting_steps() -> None:
    for heading in ("### Service won't start", "### Issues not showing up", "### API returns 401"):
        assert heading in RUNBOOK
    assert "hydraissue replay" in RUNBOOK and "hydraissue verify" in RUNBOOK
