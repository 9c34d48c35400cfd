"""Configuration: file < ``HYDRAISSUE_*`` environment < command-line flags.

Every key is declared once in ``FIELDS`` with its type and meaning; the example
config and the docs are checked against this table by a test.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_HOME = Path("~/.hydraissue")
DEFAULT_CONFIG = DEFAULT_HOME / "config.yaml"
DEFAULT_DATA_DIR = DEFAULT_HOME / "data"
DEFAULT_LISTEN = "127.0.0.1:8080"


class ConfigError(Exception):
    """A one-line, fixable problem with the configuration."""


@dataclass(frozen=True, slots=True)
class Config:
    api_token: str = ""
    admin_token: str = ""
    # GET /metrics (web/metrics.py): off while empty, else this bearer token opens it
    metrics_token: str = ""
    base_url: str = ""
    data_dir: str = str(DEFAULT_DATA_DIR)
    listen: str = DEFAULT_LISTEN
    max_json_bytes: int = 1024 * 1024
    log_level: str = "info"
    # serving (web/serving.py, web/accesslog.py): log lines, connections, shutdown
    log_format: str = "text"
    max_connections: int = 1000
    header_timeout_seconds: int = 10
    body_timeout_seconds: int = 30
    keepalive_timeout_seconds: int = 75
    shutdown_timeout_seconds: int = 10
    public_view: bool = True
    upload_max_file_bytes: int = 25 * 1024 * 1024
    upload_max_files: int = 10
    upload_max_request_bytes: int = 50 * 1024 * 1024
    report_rate_limit: int = 10
    trusted_proxies: tuple[str, ...] = ()
    # the public report form (/report): its token bucket and an anonymous report's limits
    report_rate_burst: int = 20
    report_rate_limit_exempt: tuple[str, ...] = ()
    report_max_description: int = 20_000
    report_max_custom_fields_bytes: int = 8 * 1024
    report_max_custom_fields: int = 30
    report_max_extra_fields: int = 20
    # a Markdown file of this deployment's notes, shown only to the admin (/admin/runbook)
    deployment_notes: str = ""
    # webhooks: (a section of the file)
    webhooks_allow_private_targets: bool = field(
        default=False, metadata={"section": "webhooks", "key": "allow_private_targets"}
    )
    webhooks_allowed_targets: tuple[str, ...] = field(
        default=(), metadata={"section": "webhooks", "key": "allowed_targets"}
    )
    webhooks_disable_after_hours: int = field(
        default=24, metadata={"section": "webhooks", "key": "disable_after_hours"}
    )
    # lifecycle: (a section of the file)
    lifecycle_agents_may_approve: bool = field(
        default=False, metadata={"section": "lifecycle", "key": "agents_may_approve"}
    )
    # admin: (a section of the file)
    admin_session_days: int = field(
        default=30, metadata={"section": "admin", "key": "session_days"}
    )
    # quality: (a section of the file)
    quality_stuck_days: int = field(default=3, metadata={"section": "quality", "key": "stuck_days"})
    # update: (a section of the file; hydraissue/updater.py)
    update_enabled: bool = field(default=True, metadata={"section": "update", "key": "enabled"})
    update_interval_hours: int = field(
        default=6, metadata={"section": "update", "key": "interval_hours"}
    )
    update_channel: str = field(
        default="production", metadata={"section": "update", "key": "channel"}
    )
    update_release_url: str = field(
        default="https://releases.experiencenet.com",
        metadata={"section": "update", "key": "release_url"},
    )
    update_public_key: str = field(default="", metadata={"section": "update", "key": "public_key"})
    dev: bool = field(default=False, metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    @property
    def public_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        host, port = self.host_port
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"  # where a person on this machine can reach it
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool, "tuple[str, ...]": list}
# Every field by its name (sections flattened: webhooks.allow_private_targets is the
# field webhooks_allow_private_targets).
FIELD_TYPES: dict[str, type] = {
    f.name: _TYPES[str(f.type)] for f in fields(Config) if not f.metadata.get("internal")
}
# The sections of the file: section -> key -> field name.
SECTIONS: dict[str, dict[str, str]] = {}
for _field in fields(Config):
    if "section" in _field.metadata:
        SECTIONS.setdefault(_field.metadata["section"], {})[_field.metadata["key"]] = _field.name
_SECTION_FIELDS = {name for keys in SECTIONS.values() for name in keys.values()}
# The top-level keys of the file: plain keys, and the sections.
KEYS: dict[str, type] = {
    **{name: kind for name, kind in FIELD_TYPES.items() if name not in _SECTION_FIELDS},
    **dict.fromkeys(SECTIONS, dict),
}
_TYPE_WORDS = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}
ENV = {
    "HYDRAISSUE_API_TOKEN": "api_token",
    "HYDRAISSUE_ADMIN_TOKEN": "admin_token",
    "HYDRAISSUE_DATA_DIR": "data_dir",
    "HYDRAISSUE_LISTEN": "listen",
}
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: expected HOST:PORT such as 127.0.0.1:8080, got {value!r}")
    return host.strip("[]"), int(port)


def read_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    except FileNotFoundError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return check(raw, str(path))


def check(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A config file's mapping (sections nested) as checked field values (flat)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KEYS:
            raise ConfigError(
                f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(KEYS))}"
            )
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
            for sub, sub_value in value.items():
                if sub not in SECTIONS[key]:
                    known = ", ".join(f"{key}.{k}" for k in sorted(SECTIONS[key]))
                    raise ConfigError(f"{source}: unknown key '{key}.{sub}'; known: {known}")
                flat[SECTIONS[key][sub]] = sub_value
        else:
            flat[key] = value
    return validate(flat, source)


def _shown(name: str) -> str:
    """A field's name as the file spells it (``webhooks.allowed_targets``)."""
    for section, keys in SECTIONS.items():
        for key, field_name in keys.items():
            if field_name == name:
                return f"{section}.{key}"
    return name


def validate(flat: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Field values (flat names) coerced to their types and checked together."""
    checked: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in FIELD_TYPES:
            raise ConfigError(f"{source}: unknown key {key!r}")
        checked[key] = _coerce(_shown(key), value, FIELD_TYPES[key], source)
    _check_proxies(checked.get("trusted_proxies", ()), source)
    _check_proxies(checked.get("report_rate_limit_exempt", ()), source, "report_rate_limit_exempt")
    _check_targets(checked.get("webhooks_allowed_targets", ()), source)
    _check_update(checked, source)
    if "listen" in checked:
        parse_listen(checked["listen"])
    if checked.get("log_level", "info") not in LOG_LEVELS:
        raise ConfigError(f"{source}: log_level must be one of {', '.join(LOG_LEVELS)}")
    if checked.get("log_format", "text") not in LOG_FORMATS:
        raise ConfigError(f"{source}: log_format must be one of {', '.join(LOG_FORMATS)}")
    for key in ("max_connections", "shutdown_timeout_seconds"):
        if checked.get(key) == 0:
            raise ConfigError(f"{source}: {key} must be at least 1")
    return checked


def _coerce(key: str, value: Any, want: type, source: str) -> Any:
    wrong = ConfigError(f"{source}: {key} must be {_TYPE_WORDS[want]}, got {value!r}")
    if want is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if want is int:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)  # from the environment
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        if value < 0:
            raise ConfigError(f"{source}: {key} must not be negative, got {value}")
        return value
    if want is list:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise wrong
    return value


_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$"
)


def _check_targets(targets: tuple[str, ...], source: str) -> None:
    for target in targets:
        try:
            ipaddress.ip_network(target, strict=False)
            continue
        except ValueError:
            pass
        if not _HOST.match(target):
            raise ConfigError(
                f"{source}: webhooks.allowed_targets entry {target!r} is neither a host "
                "name nor an IP address or CIDR network"
            )


def _check_update(checked: Mapping[str, Any], source: str) -> None:
    if checked.get("update_channel", "production") not in ("production", "staging"):
        raise ConfigError(f"{source}: update.channel must be production or staging")
    url = checked.get("update_release_url", "https://")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(
            f"{source}: update.release_url must be an http(s) URL such as "
            f"https://releases.experiencenet.com, got {url!r}"
        )
    if checked.get("update_interval_hours", 6) == 0:
        raise ConfigError(f"{source}: update.interval_hours must be at least 1")
    key = checked.get("update_public_key", "")
    if key:
        from hydraissue import signing

        try:
            signing.public_key(key)
        except ValueError as exc:
            raise ConfigError(f"{source}: update.public_key {exc}") from None


def _check_proxies(proxies: tuple[str, ...], source: str, key: str = "trusted_proxies") -> None:
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: {key} entry {proxy!r} is not an IP address or CIDR network"
            ) from None


def load(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    dev: bool = False,
    require_tokens: bool = True,
) -> Config:
    """Build the effective config. In dev mode a missing file is created with fresh tokens.

    ``require_tokens=False`` is for offline tools (replay, verify, gc-uploads).
    """
    env = os.environ if env is None else env
    config_path = (path or DEFAULT_CONFIG).expanduser()
    values: dict[str, Any] = {}
    try:
        values.update(read_file(config_path))
    except FileNotFoundError:
        if path is not None and not dev:
            raise ConfigError(
                f"{config_path}: no such file; copy config.yaml.example there"
            ) from None
        if dev:
            write_dev_config(config_path)
            values.update(read_file(config_path))
    for name, key in ENV.items():
        if env.get(name):
            values[key] = env[name]
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    config = replace(Config(), **validate(values, "configuration"), dev=dev)
    for key in ("api_token", "admin_token") if require_tokens else ():
        if not getattr(config, key):
            raise ConfigError(
                f"{key} is not set: put it in {config_path}, set "
                f"HYDRAISSUE_{key.upper()}, or start with --dev for generated tokens"
            )
    return config


def write_dev_config(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (
        "# Written by `hydraissue serve --dev`: generated tokens for local use.\n"
        "# See config.yaml.example for every key.\n"
        f"api_token: {secrets.token_urlsafe(24)}\n"
        f"admin_token: {secrets.token_urlsafe(24)}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
