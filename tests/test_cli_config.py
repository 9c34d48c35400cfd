"""The CLI and the configuration: version, config errors, precedence, serve --dev,
the data dir lock, replay and verify on a data dir written by the real app."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue import __version__
from hydraissue.cli import main
from hydraissue.config import Config, ConfigError, load
from hydraissue.datadir import DataDirLock
from tests.conftest import free_port, settled
from web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin" / "hydraissue"
Client = TestClient[Any, web.Application]
ENV_NAMES = (
    "HYDRAISSUE_API_TOKEN",
    "HYDRAISSUE_ADMIN_TOKEN",
    "HYDRAISSUE_DATA_DIR",
    "HYDRAISSUE_LISTEN",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HYDRAISSUE_* from the outer shell, and ~ is a fresh folder."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def run(
    *args: str, home: Path, timeout: float = 20, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(home, **env),
        check=False,
    )


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- version ---------------------------------------------------------------------------


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    out, err = capsys.readouterr()
    assert out == f"hydraissue {__version__}\n"
    assert err == ""


def test_version_binary(tmp_path: Path) -> None:
    result = run("version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"hydraissue \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout
    assert result.stdout == f"hydraissue {__version__}\n"


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


# -- config errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("api_token: a\nadmin_token: b\nbogus: 1\n", "bogus"),
        ("api_token: a\nadmin_token: b\napi_tokn: c\n", "api_tokn"),
        ("api_token: 123\nadmin_token: b\n", "api_token"),
        ("api_token: a\nadmin_token: [b]\n", "admin_token"),
        ("api_token: a\nadmin_token: b\nmax_json_bytes: big\n", "max_json_bytes"),
        ("api_token: a\nadmin_token: b\nmax_json_bytes: true\n", "max_json_bytes"),
        ("api_token: a\nadmin_token: b\nmax_json_bytes: 1.5\n", "max_json_bytes"),
        ("api_token: a\nadmin_token: b\nbase_url: 5\n", "base_url"),
        ("api_token: a\nadmin_token: b\nlisten: nowhere\n", "listen"),
        ("api_token: a\nadmin_token: b\nlisten: 127.0.0.1:99999\n", "listen"),
        ("api_token: a\nadmin_token: b\nlog_level: loud\n", "log_level"),
        ("api_token: a\nadmin_token: b\ndata_dir: {a: 1}\n", "data_dir"),
    ],
)
def test_config_error_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    path = write_config(tmp_path / "config.yaml", text)
    code = main(["serve", "--config", str(path), "--data-dir", str(tmp_path / "data")])
    assert code == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("hydraissue: ")
    assert named in line
    assert not (tmp_path / "data").exists()  # nothing started


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("api_token: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("just a string\n", "mapping"),
    ],
)
def test_unreadable_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = write_config(tmp_path / "config.yaml", text)
    assert main(["verify", "--config", str(path), "--data-dir", str(tmp_path / "d")]) == 1
    line = one_line(capsys.readouterr().err)
    assert needle in line
    assert str(path) in line


def test_config_error_from_the_binary(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.yaml", "api_token: a\nadmin_token: b\nbogus: 1\n")
    result = run("serve", "--config", str(path), home=tmp_path)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "bogus" in line
    assert result.stdout == ""


def test_missing_config_file_named_explicitly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.yaml"
    assert main(["serve", "--config", str(path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(path) in line
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("admin_token: b\n", "api_token"),
        ("api_token: a\n", "admin_token"),
        ("api_token: ''\nadmin_token: b\n", "api_token"),
        ("", "api_token"),
    ],
)
def test_missing_token_without_dev_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write_config(tmp_path / "config.yaml", text)
    assert main(["serve", "--config", str(path), "--data-dir", str(tmp_path / "d")]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"{key} is not set" in line
    assert "--dev" in line


def test_missing_token_from_the_binary_with_no_config_at_all(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    home.mkdir()
    result = run("serve", "--listen", f"127.0.0.1:{free_port()}", home=home)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "api_token is not set" in line
    assert not (home / ".hydraissue" / "config.yaml").exists()  # only --dev writes one


def test_bad_listen_in_env_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "config.yaml", "api_token: a\nadmin_token: b\n")
    monkeypatch.setenv("HYDRAISSUE_LISTEN", "not-an-address")
    assert main(["serve", "--config", str(path)]) == 1
    assert "listen" in one_line(capsys.readouterr().err)


# -- precedence ------------------------------------------------------------------------


FILE = (
    "api_token: file-api\n"
    "admin_token: file-admin\n"
    "data_dir: /from/file\n"
    "listen: 127.0.0.1:1111\n"
    "base_url: https://issues.example.com/\n"
    "max_json_bytes: 2048\n"
    "log_level: warning\n"
)


def test_file_values_are_used(tmp_path: Path) -> None:
    config = load(write_config(tmp_path / "c.yaml", FILE), env={})
    assert config == Config(
        api_token="file-api",
        admin_token="file-admin",
        data_dir="/from/file",
        listen="127.0.0.1:1111",
        base_url="https://issues.example.com/",
        max_json_bytes=2048,
        log_level="warning",
    )
    assert config.public_url == "https://issues.example.com"
    assert config.host_port == ("127.0.0.1", 1111)


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {
        "HYDRAISSUE_API_TOKEN": "env-api",
        "HYDRAISSUE_ADMIN_TOKEN": "env-admin",
        "HYDRAISSUE_DATA_DIR": "/from/env",
        "HYDRAISSUE_LISTEN": "0.0.0.0:2222",
    }
    config = load(write_config(tmp_path / "c.yaml", FILE), env=env)
    assert config.api_token == "env-api"
    assert config.admin_token == "env-admin"
    assert config.data_dir == "/from/env"
    assert config.listen == "0.0.0.0:2222"
    assert config.max_json_bytes == 2048  # not overridable by env: still the file's


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    env = {"HYDRAISSUE_DATA_DIR": "/from/env", "HYDRAISSUE_LISTEN": "0.0.0.0:2222"}
    flags = {"data_dir": "/from/flag", "listen": "127.0.0.1:3333", "api_token": None}
    config = load(write_config(tmp_path / "c.yaml", FILE), env=env, flags=flags)
    assert config.data_dir == "/from/flag"
    assert config.listen == "127.0.0.1:3333"
    assert config.api_token == "file-api"  # a flag left unset (None) changes nothing


def test_env_only_tokens_without_a_file(tmp_path: Path) -> None:
    env = {"HYDRAISSUE_API_TOKEN": "a", "HYDRAISSUE_ADMIN_TOKEN": "b"}
    config = load(None, env=env)
    assert (config.api_token, config.admin_token) == ("a", "b")
    assert config.listen == "127.0.0.1:8080"
    assert config.data_path == Path.home() / ".hydraissue" / "data"


def test_empty_env_value_does_not_override(tmp_path: Path) -> None:
    config = load(write_config(tmp_path / "c.yaml", FILE), env={"HYDRAISSUE_API_TOKEN": ""})
    assert config.api_token == "file-api"


def test_bad_value_in_env_or_flags_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", FILE)
    with pytest.raises(ConfigError, match="listen"):
        load(path, env={"HYDRAISSUE_LISTEN": "nope"})
    with pytest.raises(ConfigError, match="listen"):
        load(path, env={}, flags={"listen": "host:port"})


def test_dev_config_is_written_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "config.yaml"
    first = load(path, env={}, dev=True)
    assert first.dev
    assert first.api_token and first.admin_token and first.api_token != first.admin_token
    assert path.stat().st_mode & 0o777 == 0o600
    second = load(path, env={}, dev=True)
    assert (second.api_token, second.admin_token) == (first.api_token, first.admin_token)


def test_example_config_documents_every_key_and_loads() -> None:
    example = ROOT / "config.yaml.example"
    config = load(example, env={})
    assert config.api_token and config.admin_token
    text = example.read_text()
    for key in ("api_token", "admin_token", "base_url", "data_dir", "listen"):
        assert re.search(rf"^{key}:", text, re.M), key
    for name in ENV_NAMES:
        assert name in text, name


# -- serve --dev, the lock, and the real binary ------------------------------------------


class Server:
    """A ``hydraissue serve`` child process with its stdout read by a thread."""

    def __init__(self, args: list[str], home: Path) -> None:
        self.proc = subprocess.Popen(
            [str(BIN), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(home),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.out.append(line)
            if needle in line:
                return line
        stderr = self.proc.stderr.read() if self.proc.poll() is not None else ""  # type: ignore[union-attr]
        raise AssertionError(f"no {needle!r} in {self.out!r}; stderr: {stderr}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        return code


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.stop()


def http(url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_serve_dev_writes_a_config_and_serves_the_api(
    tmp_path: Path, servers: list[Server]
) -> None:
    home = tmp_path / "devhome"
    home.mkdir()
    port = free_port()
    server = Server(["serve", "--dev", "--listen", f"127.0.0.1:{port}"], home)
    servers.append(server)
    token_line = server.wait_for("api token:")
    token = token_line.split("api token:", 1)[1].strip()
    server.wait_for("curl")
    server.wait_for("listening on")
    assert any("wrote a dev config" in line for line in server.out), server.out
    assert any(f"Bearer {token}" in line for line in server.out), server.out

    config_path = home / ".hydraissue" / "config.yaml"
    written = load(config_path, env={})
    assert written.api_token == token
    assert written.admin_token and written.admin_token != token
    assert config_path.stat().st_mode & 0o777 == 0o600

    base = f"http://127.0.0.1:{port}/api/v1"
    status, health = http(f"{base}/health")
    assert status == 200
    assert health["service"] == "hydraissue"
    assert health["status"] == "ok"
    assert health["version"] == __version__
    status, created = http(f"{base}/issues", token, {"title": "from the dev server"})
    assert status == 201
    assert created["id"] == 1
    status, listed = http(f"{base}/issues", token)
    assert [i["title"] for i in listed] == ["from the dev server"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        http(f"{base}/issues", "wrong")
    assert denied.value.code == 401
    denied.value.close()

    # A second instance on the same data dir stops at once, naming the holder.
    data_dir = home / ".hydraissue" / "data"
    started = time.monotonic()
    second = run("serve", "--dev", "--listen", f"127.0.0.1:{free_port()}", home=home, timeout=15)
    assert second.returncode == 1
    assert time.monotonic() - started < 10
    line = one_line(second.stderr)
    assert f"pid {server.proc.pid}" in line
    assert str(data_dir) in line

    # So do the offline tools.
    busy = run("verify", "--data-dir", str(data_dir), home=home)
    assert busy.returncode == 1
    assert f"pid {server.proc.pid}" in one_line(busy.stderr)

    assert server.stop() == 0

    # Stopped cleanly: the projections on disk agree with the logs.
    verified = run("verify", "--data-dir", str(data_dir), home=home)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok:")


def test_second_serve_on_a_locked_data_dir_names_the_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    path = write_config(tmp_path / "c.yaml", "api_token: a\nadmin_token: b\n")
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        started = time.monotonic()
        code = main(
            [
                "serve",
                "--config",
                str(path),
                "--data-dir",
                str(data_dir),
                "--listen",
                f"127.0.0.1:{free_port()}",
            ]
        )
        assert time.monotonic() - started < 5
    finally:
        lock.release()
    assert code == 1
    line = one_line(capsys.readouterr().err)
    assert f"pid {os.getpid()}" in line


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "api_token: a\nadmin_token: b\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run(
            "serve",
            "--config",
            str(path),
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"127.0.0.1:{port}",
            home=tmp_path,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hydraissue: cannot listen on")
    assert str(port) in last


# -- replay and verify on a data dir written by the app ----------------------------------


TRICKY = [
    "yes",
    "null",
    "123",
    "2024-01-01",
    "# not a comment",
    "key: value",
    "'quoted' \"both\"",
    "Ünïcödé 🦀 中文",
    "tab\tand\\backslash",
    "  ~  ",
    "sep\u2028nel\x85bom\ufeffctl\x07del\x7f",
    "trailing space ",
    "multi\nline\n",
]


async def populate(client: Client, auth: dict[str, str]) -> dict[int, dict[str, Any]]:
    """A data dir with every kind of event, tricky strings, a deletion."""
    made = []
    for n, title in enumerate(TRICKY):
        resp = await client.post(
            "/api/v1/issues",
            json={
                "title": title,
                "description": f"line one\nline two: {title}\n\n  indented",
                "project": "p" if n % 2 else None,
                "category": "bug",
                "reporter": f"r{n}",
                "custom_fields": {
                    "float": 1.5,
                    "tiny": 1e-7,
                    "int": 10,
                    "neg": -3,
                    "bool": False,
                    "none": None,
                    "list": [1, "a", {"b": []}],
                    "empty": "",
                    "date": "2024-01-01",
                    "yes": "yes",
                    "text": title,
                },
            },
            headers=auth,
        )
        assert resp.status == 201, await resp.text()
        made.append((await resp.json())["id"])
    first = made[0]
    url = f"/api/v1/issues/{first}"
    assert (
        await client.patch(url, json={"status": "groomed", "priority": "high"}, headers=auth)
    ).status == 200
    assert (
        await client.put(
            f"{url}/plan", json={"plan": "1. a\n2. b", "status": "proposed"}, headers=auth
        )
    ).status == 200
    assert (
        await client.post(f"{url}/comments", json={"author": "x", "text": "c: 1"}, headers=auth)
    ).status == 201
    assert (
        await client.post(
            f"{url}/nim-actions", json={"name": "nebula", "action": "groomed"}, headers=auth
        )
    ).status == 201
    assert (await client.delete(f"/api/v1/issues/{made[1]}", headers=auth)).status == 204
    state = {}
    for issue_id in made:
        resp = await client.get(f"/api/v1/issues/{issue_id}", headers=auth)
        if resp.status == 200:
            state[issue_id] = await resp.json()
    return state


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path / "cli-config.yaml", "api_token: a\nadmin_token: b\n")


def cli(
    capsys: pytest.CaptureFixture[str], command: str, config_file: Path, data_dir: Path
) -> tuple[int, str, str]:
    code = main([command, "--config", str(config_file), "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


async def test_verify_replay_on_an_app_data_dir(
    aiohttp_client: Any,
    config: Config,
    auth: dict[str, str],
    data_dir: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client: Client = await aiohttp_client(create_app(config))
    state = await populate(client, auth)
    assert len(state) == len(TRICKY) - 1

    # While the app owns the data dir, the offline tools refuse to touch it.
    code, _, err = await asyncio.to_thread(cli, capsys, "verify", config_file, data_dir)
    assert code == 1
    assert f"pid {os.getpid()}" in one_line(err)
    await settled(client)
    await client.close()

    code, out, err = await asyncio.to_thread(cli, capsys, "verify", config_file, data_dir)
    assert code == 0, out + err
    assert out.startswith("ok:")
    issue_files = {p.name: p.read_bytes() for p in (data_dir / "issues").glob("*.yaml")}
    assert sorted(issue_files) == sorted(f"{i}.yaml" for i in state)

    code, out, err = await asyncio.to_thread(cli, capsys, "replay", config_file, data_dir)
    assert code == 0, out + err
    assert f"into {len(state)} issues (1 deleted)" in out
    # Replaying a current data dir reproduces the issue files byte for byte.
    assert {p.name: p.read_bytes() for p in (data_dir / "issues").glob("*.yaml")} == issue_files
    code, out, _ = await asyncio.to_thread(cli, capsys, "verify", config_file, data_dir)
    assert code == 0, out

    # And a fresh app serves exactly the state the first one had.
    again: Client = await aiohttp_client(create_app(config))
    for issue_id, issue in state.items():
        resp = await again.get(f"/api/v1/issues/{issue_id}", headers=auth)
        assert await resp.json() == issue


async def test_shutdown_right_after_writes_leaves_projections_that_verify(
    aiohttp_client: Any,
    config: Config,
    auth: dict[str, str],
    data_dir: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopping the server the moment writes end (a SIGTERM during traffic): shutdown
    lets the background subscribers catch up and writes the snapshots, so once the app
    is closed and its lock released, every projection file agrees with the logs."""
    client: Client = await aiohttp_client(create_app(config))
    await populate(client, auth)
    await client.close()

    code, out, err = await asyncio.to_thread(cli, capsys, "verify", config_file, data_dir)
    assert code == 0, out + err


@pytest.fixture
async def app_data_dir(aiohttp_client: Any, config: Config, auth: dict[str, str]) -> Path:
    client: Client = await aiohttp_client(create_app(config))
    await populate(client, auth)
    await settled(client)
    await client.close()
    return config.data_path


def _tamper_title(data_dir: Path) -> str:
    path = data_dir / "issues" / "1.yaml"
    text = path.read_text()
    assert 'title: "yes"' in text
    path.write_text(text.replace('title: "yes"', "title: edited by hand", 1))
    return "issues/1.yaml: differs from its event log"


def _delete_index(data_dir: Path) -> str:
    (data_dir / "issues.yaml").unlink()
    return "issues.yaml: missing or unreadable"


def _delete_issue_file(data_dir: Path) -> str:
    (data_dir / "issues" / "3.yaml").unlink()
    return "issues/3.yaml: missing or unreadable"


def _stray_issue_file(data_dir: Path) -> str:
    (data_dir / "issues" / "77.yaml").write_text("id: 77\n")
    return "issues/77.yaml: has no event log"


def _resurrect_deleted(data_dir: Path) -> str:
    (data_dir / "issues" / "2.yaml").write_bytes((data_dir / "issues" / "3.yaml").read_bytes())
    return "issues/2.yaml: exists but the issue was deleted"


def _tamper_index_row(data_dir: Path) -> str:
    path = data_dir / "issues.yaml"
    text = path.read_text()
    row = next(line for line in text.splitlines() if line.startswith("- [1,"))
    assert '"proposed"' in row
    path.write_text(text.replace(row, row.replace('"proposed"', '"done"', 1), 1))
    return "issues.yaml: row for issue 1 differs from its log"


def _torn_tail(data_dir: Path) -> str:
    with (data_dir / "events" / "3.yaml").open("ab") as handle:
        handle.write(b'- {"issue_id": 3, "seq": 2, "po')
    return "events/3.yaml"


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_title,
        _delete_index,
        _delete_issue_file,
        _stray_issue_file,
        _resurrect_deleted,
        _tamper_index_row,
        _torn_tail,
    ],
)
def test_verify_finds_damage_and_replay_repairs_it(
    app_data_dir: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Any,
) -> None:
    code, out, err = cli(capsys, "verify", config_file, app_data_dir)
    assert code == 0, out + err
    before = {p.name: p.read_bytes() for p in (app_data_dir / "issues").glob("*.yaml")}

    expected = tamper(app_data_dir)
    code, out, err = cli(capsys, "verify", config_file, app_data_dir)
    assert code == 1, out
    assert expected in out, out
    assert "problem" in out.splitlines()[0]
    assert "hydraissue replay" in out

    code, out, err = cli(capsys, "replay", config_file, app_data_dir)
    assert code == 0, out + err
    code, out, err = cli(capsys, "verify", config_file, app_data_dir)
    assert code == 0, out + err
    after = {p.name: p.read_bytes() for p in (app_data_dir / "issues").glob("*.yaml")}
    assert after == before


def test_torn_tail_is_reported_by_replay(
    app_data_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _torn_tail(app_data_dir)
    code, out, _ = cli(capsys, "replay", config_file, app_data_dir)
    assert code == 0
    assert "repaired: events/3.yaml: cut a torn last event" in out
    assert (app_data_dir / "events" / "3.yaml").read_bytes().endswith(b"\n")


def test_damage_inside_a_log_fails_verify_and_replay_with_one_line(
    app_data_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = app_data_dir / "events" / "1.yaml"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[1] = b"- {this is not an event}\n"
    path.write_bytes(b"".join(lines))

    code, out, _ = cli(capsys, "verify", config_file, app_data_dir)
    assert code == 1
    assert "events/1.yaml: line 2 is not valid JSON" in out

    # Replay rebuilds every other issue and names the damaged log; exit 1.
    code, out, err = cli(capsys, "replay", config_file, app_data_dir)
    assert code == 1, out + err
    assert "1 damaged log left out" in out
    assert "events/1.yaml: line 2" in out


def test_verify_and_replay_with_the_binary(app_data_dir: Path, tmp_path: Path) -> None:
    _delete_index(app_data_dir)
    result = run("verify", "--data-dir", str(app_data_dir), home=tmp_path)
    assert result.returncode == 1
    assert "issues.yaml: missing or unreadable" in result.stdout
    result = run("replay", "--data-dir", str(app_data_dir), home=tmp_path)
    assert result.returncode == 0, result.stderr
    live = len(TRICKY) - 1
    assert re.search(rf"replayed \d+ events into {live} issues \(1 deleted\)", result.stdout)
    result = run(
        "verify", home=tmp_path, HYDRAISSUE_DATA_DIR=str(app_data_dir)
    )  # the env var picks the data dir too
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_on_an_empty_data_dir(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "replay", config_file, tmp_path / "empty")
    assert code == 0
    assert "replayed 0 events into 0 issues" in out
    code, out, _ = cli(capsys, "verify", config_file, tmp_path / "empty")
    assert code == 0, out
