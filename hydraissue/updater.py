"""Updates through the ecosystem's release server (hydrarelease's ``pkg/updater`` protocol).

    GET {release_url}/{project}/{channel}/latest.json        -> {"version": "1.2.3"}
    GET {release_url}/{project}/{channel}/v{version}/{project}-{os}-{arch}
    GET {release_url}/{project}/{channel}/v{version}/SHA256SUMS   "<hex>  <name>" lines

A newer version (leading ``v`` ignored, compared numerically: 1.10.0 > 1.9.0) is
downloaded to a temp file beside the installed artifact, checked (size > 0, its
SHA256SUMS line, and ``<artifact> version`` printing the expected version), then the
installed one is kept as ``<path>.backup`` and the new one renamed over it (atomic);
last, ``restart`` is called. Any refusal leaves the installed artifact as it was.

``serve`` stages a verified download as ``<path>.staged`` instead (``stage``) and hands
over only after a trial (``try_release``): once it has stopped serving, it starts the
staged artifact with the same arguments on a spare loopback port and waits up to 60 s
for ``/api/v1/health`` to answer 200. Then the running artifact is kept as the backup
and the staged one renamed over it; if the trial fails, the staged file is removed,
the version written to ``<path>.failed`` (never tried again until a newer one appears;
delete the file to retry it), and the running version started again. The installed
file is never the untried one, so a crash during the trial restarts the old version;
and the old code runs the trial: a broken release cannot be trusted to judge itself.

Signatures (``update.public_key``): with a key configured, ``SHA256SUMS.sig`` must be
there and verify (Ed25519 over SHA256SUMS' exact bytes, hydraissue/signing.py) before
anything is downloaded; an unsigned or wrongly signed release is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from events.fsio import fsync_dir
from hydraissue import signing
from hydraissue.config import Config

log = logging.getLogger("hydraissue.updater")

PROJECT = "hydraissue"
PLATFORM = "linux-amd64"
CHANNELS = ("production", "staging")
DEFAULT_RELEASE_URL = "https://releases.experiencenet.com"
MAX_LATEST_BYTES = 64 * 1024
MAX_SUMS_BYTES = 1024 * 1024
MAX_SIG_BYTES = 4096
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
VERSION_TIMEOUT = 60.0
TRIAL_SECONDS = 60.0  # the "cannot start or serve /api/v1/health within 60 s"
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:[-+].*)?$")


class UpdateError(Exception):
    """One line: what went wrong with an update and what to do; nothing was installed."""


def parse_version(text: str) -> tuple[int, ...]:
    """``v1.10.0`` -> (1, 10, 0); a suffix after ``-`` or ``+`` is ignored."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 1.2 == 1.2.0
    return tuple(parts)


def clean_version(text: str) -> str:
    return text.strip().removeprefix("v")


def auto_update_off(*, enabled: bool, dev: bool, env: dict[str, str] | None = None) -> str | None:
    """Why automatic updates are off (``--dev``, ``HYDRA_AUTO_UPDATE=off``, the config), or None."""
    env = dict(os.environ) if env is None else env
    if dev:
        return "--dev"
    if env.get("HYDRA_AUTO_UPDATE", "").strip().lower() in ("off", "0", "false", "no"):
        return "HYDRA_AUTO_UPDATE=off"
    if not enabled:
        return "update.enabled is false"
    return None


def running_artifact() -> Path | None:
    """The release artifact this process runs from (a zipapp), or None (a source tree, a venv)."""
    candidate = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if candidate and candidate.is_file() and zipfile.is_zipfile(candidate):
        return candidate
    return None


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    folder_url: str  # {release_url}/{project}/{channel}/v{version}
    name: str  # {project}-{os}-{arch}

    @property
    def artifact_url(self) -> str:
        return f"{self.folder_url}/{self.name}"

    @property
    def sums_url(self) -> str:
        return f"{self.folder_url}/SHA256SUMS"


@dataclass(slots=True)
class Result:
    """What one check or update did: ``up-to-date``, ``available``, ``installed`` or ``failed``."""

    outcome: str
    current: str
    latest: str | None = None
    message: str = ""


def _no_restart(version: str) -> None:
    return None


def _beside(installed: Path, suffix: str) -> Path:
    return installed.with_name(installed.name + suffix)


def staged_path(installed: Path) -> Path:
    """Where ``serve`` keeps a verified download until it has passed its trial."""
    return _beside(installed, ".staged")


def keep_backup(installed: Path) -> Path:
    """``<path>.backup``: the installed artifact, kept before another replaces it."""
    backup = _beside(installed, ".backup")
    if not installed.exists():
        return backup  # a first install: nothing to keep
    temp = backup.with_name(backup.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        os.link(installed, temp)  # the very file that runs, for free
    except OSError:
        import shutil

        shutil.copy2(installed, temp)
    os.replace(temp, backup)
    return backup


def failed_file(installed: Path) -> Path:
    """``<artifact>.failed``: versions that failed their trial here, one per line."""
    return _beside(installed, ".failed")


def failed_versions(installed: Path) -> set[str]:
    try:
        text = failed_file(installed).read_text("utf-8")
    except OSError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def _version_or_zero(text: str) -> tuple[int, ...]:
    try:
        return parse_version(text)
    except ValueError:  # a hand-edited line: kept, sorted first
        return (0,)


def remember_failed(installed: Path, version: str) -> None:
    """Add ``version`` to the failed list (written whole, atomically)."""
    versions = sorted(failed_versions(installed) | {version}, key=_version_or_zero)
    target = failed_file(installed)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temp, "w", encoding="utf-8") as out:
        out.write("".join(f"{v}\n" for v in versions))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)


@dataclass
class Updater:
    """One installed artifact, one channel. ``say`` reports each step (log or print);
    ``restart(version)`` runs after an install (re-exec, or exit for systemd
    ``Restart=always``)."""

    installed: Path
    current: str
    release_url: str = DEFAULT_RELEASE_URL
    channel: str = "production"
    public_key: str = ""
    project: str = PROJECT
    platform: str = PLATFORM
    restart: Callable[[str], None] = _no_restart
    say: Callable[[str], None] = log.info
    stage: bool = False  # serve: verified to <path>.staged, installed after its trial
    timeout: float = 60.0
    version_timeout: float = VERSION_TIMEOUT
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    @property
    def channel_url(self) -> str:
        return f"{self.release_url.rstrip('/')}/{self.project}/{self.channel}"

    @property
    def name(self) -> str:
        return f"{self.project}-{self.platform}"

    async def __aenter__(self) -> Updater:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.timeout
        )
        self._session = aiohttp.ClientSession(timeout=timeout, trust_env=False)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the protocol -----------------------------------------------------------------

    async def latest(self) -> Release:
        """The channel's latest release, as ``latest.json`` names it."""
        url = f"{self.channel_url}/latest.json"
        self.say(f"checking {url}")
        body = await self._get(url, MAX_LATEST_BYTES)
        try:
            data = orjson.loads(body)
            version = clean_version(data["version"])
            parse_version(version)
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError):
            raise UpdateError(
                f'{url} did not answer a latest.json like {{"version": "1.2.3"}} '
                f"(got {body[:60]!r}); check update.release_url and update.channel"
            ) from None
        return Release(version, f"{self.channel_url}/v{version}", self.name)

    async def check(self) -> Result:
        """Whether the channel holds a newer version than the one installed."""
        release = await self.latest()
        if parse_version(release.version) > parse_version(self.current):
            if release.version in failed_versions(self.installed):
                why = (
                    f"{release.version} failed its start-up trial here and was not installed; "
                    f"waiting for a newer release (delete {failed_file(self.installed)} to "
                    "try it again)"
                )
                self.say(why)
                return Result("held-back", self.current, release.version, why)
            self.say(f"newer version {release.version} (running {self.current})")
            return Result("available", self.current, release.version)
        self.say(f"up to date: {self.current} (latest on {self.channel}: {release.version})")
        return Result("up-to-date", self.current, release.version)

    async def update(self) -> Result:
        """Check, and install a newer version (then ``restart``); raises UpdateError."""
        found = await self.check()
        if found.outcome != "available":
            return found
        release = Release(found.latest or "", f"{self.channel_url}/v{found.latest}", self.name)
        await self.install(release)
        if self.stage:
            done = f"staged {release.version} as {staged_path(self.installed)}"
            self.say(f"{done}; it is tried at the restart, then installed")
        else:
            done = f"installed {release.version} at {self.installed}"
            self.say(done)
        self.restart(release.version)
        return Result("installed", self.current, release.version, done)

    async def install(self, release: Release) -> None:
        """Download, verify and atomically install ``release``; nothing changes on a refusal."""
        folder = self.installed.parent
        if not os.access(folder, os.W_OK):
            raise UpdateError(
                f"cannot write in {folder}: run the update as the user that owns {self.installed}"
            )
        self.say(f"fetching {release.sums_url}")
        sums = await self._get(release.sums_url, MAX_SUMS_BYTES)
        if self.public_key:
            await self._check_signature(release, sums)
        want = self._sum_for(sums, release)
        temp = folder / f".{self.installed.name}.{os.getpid()}.update"
        try:
            self.say(f"downloading {release.artifact_url} to {temp}")
            size, got = await self._download(release.artifact_url, temp)
            if size == 0:
                raise UpdateError(f"{release.artifact_url} is empty; the release is broken")
            if got != want:
                raise UpdateError(
                    f"checksum mismatch for {release.artifact_url}: SHA256SUMS says {want}, "
                    f"the download is {got}; not installed (a broken or tampered release)"
                )
            self.say(f"sha256 {got} matches SHA256SUMS ({size} bytes)")
            temp.chmod(0o755)
            await self._answers_version(temp, release.version)
            if self.stage:
                os.replace(temp, staged_path(self.installed))
            else:
                backup = keep_backup(self.installed)
                self.say(f"kept {self.installed.name} {self.current} as {backup}")
                os.replace(temp, self.installed)
            fsync_dir(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    # -- steps ------------------------------------------------------------------------

    async def _check_signature(self, release: Release, sums: bytes) -> None:
        url = f"{release.sums_url}.sig"
        try:
            key = signing.public_key(self.public_key)
        except ValueError as exc:
            raise UpdateError(f"update.public_key {exc}; not installed") from None
        self.say(f"fetching {url}")
        try:
            body = await self._get(url, MAX_SIG_BYTES)
        except UpdateError as exc:
            raise UpdateError(
                f"release {release.version} is not signed ({exc}); update.public_key asks "
                "for a valid SHA256SUMS.sig: not installed"
            ) from None
        sig = signing.signature(body)
        if sig is None or not signing.verifies(key, sums, sig):
            raise UpdateError(
                f"{url} does not verify SHA256SUMS with update.public_key (a tampered "
                "release, or signed with another key): not installed"
            )
        self.say("SHA256SUMS.sig verifies with update.public_key")

    def _sum_for(self, body: bytes, release: Release) -> str:
        for line in body.decode("utf-8", "replace").splitlines():
            parts = line.strip().split()
            if len(parts) == 2 and parts[1].lstrip("*") == release.name:
                digest = parts[0].lower()
                if re.fullmatch(r"[0-9a-f]{64}", digest):
                    return digest
        raise UpdateError(
            f"{release.sums_url} has no SHA-256 line for {release.name}; the release is "
            "incomplete, not installed"
        )

    async def _answers_version(self, path: Path, version: str) -> None:
        self.say(f"running {path.name} version")
        try:
            said = await ask_version(path, self.version_timeout, what="the downloaded artifact")
        except UpdateError as exc:
            raise UpdateError(f"{exc}; not installed") from None
        if not _same_version(said.split()[-1], version):
            raise UpdateError(
                f"the downloaded artifact says {said[:80]!r}, expected version {version}; "
                "not installed"
            )
        self.say(f"it answers {said!r}")

    async def _get(self, url: str, limit: int) -> bytes:
        session = self._need_session()
        try:
            async with session.get(url, allow_redirects=True) as response:
                if response.status != 200:
                    raise UpdateError(
                        f"{url} answered {response.status}; check update.release_url "
                        "and update.channel"
                    )
                body = await response.content.read(limit + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpdateError(
                f"release server unreachable ({url}: {_reason(exc)}); check "
                "update.release_url, or try again later"
            ) from None
        if len(body) > limit:
            raise UpdateError(f"{url} is larger than {limit} bytes; not a release file")
        return body

    async def _download(self, url: str, temp: Path) -> tuple[int, str]:
        session = self._need_session()
        digest = hashlib.sha256()
        size = 0
        try:
            async with session.get(url, allow_redirects=True) as response:
                if response.status != 200:
                    raise UpdateError(
                        f"{url} answered {response.status}; the release is incomplete"
                    )
                with temp.open("wb") as handle:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > MAX_ARTIFACT_BYTES:
                            raise UpdateError(f"{url} is larger than {MAX_ARTIFACT_BYTES} bytes")
                        digest.update(chunk)
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpdateError(
                f"download of {url} failed ({_reason(exc)}); nothing installed, try again later"
            ) from None
        except OSError as exc:
            raise UpdateError(
                f"cannot write {temp} ({exc.strerror}); free space in {temp.parent}"
            ) from None
        return size, digest.hexdigest()

    def _need_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with Updater(...)`")
        return self._session


async def ask_version(path: Path, timeout: float = VERSION_TIMEOUT, *, what: str = "") -> str:
    """What ``<path> version`` prints (``hydraissue 1.2.3``); UpdateError if it fails."""
    what = what or str(path)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path),
            "version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise UpdateError(f"{what} cannot run ({exc.strerror})") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise UpdateError(f"{what} did not answer `version` in {timeout:g}s") from None
    said = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise UpdateError(f"{what}: `version` failed (exit {proc.returncode}: {tail[0][:200]})")
    if not said:
        raise UpdateError(f"{what}: `version` printed nothing")
    return said


def _same_version(said: str, expected: str) -> bool:
    try:
        return parse_version(said) == parse_version(expected)
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


# -- automatic updates inside `serve` ----------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AutoUpdater:
    """The periodic check of ``serve``: every ``interval`` seconds, ±``jitter`` of it (the
    first one after a random part of ``first`` of it), ``update()``; a failure is logged
    and tried again at the next check. ``status()`` is for the health check."""

    def __init__(
        self,
        make: Callable[[], Updater],
        interval: float,
        *,
        jitter: float = 0.1,
        first: float = 0.1,
        first_delay: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.make = make
        self.interval = interval
        self.jitter = jitter
        self.first = first
        self.first_delay = first_delay  # seconds, instead of a random part of ``first``
        self.rng = rng
        self.last_check: str | None = None
        self.last_result: Result | None = None
        self.checks = 0

    def delay(self, *, first: bool = False) -> float:
        if first:
            if self.first_delay is not None:
                return self.first_delay
            return self.interval * self.first * self.rng()
        return self.interval * (1 + self.jitter * (2 * self.rng() - 1))

    async def check_once(self) -> Result:
        updater = self.make()
        self.checks += 1
        self.last_check = _now()
        try:
            async with updater:
                result = await updater.update()
        except UpdateError as exc:
            log.warning("update check failed: %s", exc)
            result = Result("failed", updater.current, message=str(exc))
        except Exception as exc:  # a bug must not take the service down with it
            log.exception("update check crashed")
            result = Result("failed", updater.current, message=f"{type(exc).__name__}: {exc}")
        self.last_result = result
        return result

    async def run(self) -> None:
        await asyncio.sleep(self.delay(first=True))
        while True:
            result = await self.check_once()
            if result.outcome == "installed":
                return  # the restart is under way
            await asyncio.sleep(self.delay())

    def status(self) -> dict[str, object]:
        result = self.last_result
        return {
            "last_check": self.last_check,
            "last_result": None if result is None else result.outcome,
            "latest": None if result is None else result.latest,
            "message": None if result is None else result.message or None,
            "checks": self.checks,
        }


@dataclass
class ServeUpdates:
    """``serve``'s automatic updates, in a thread of their own (a download or the new
    artifact's ``version`` never competes with requests); after the server has stopped,
    ``reexec_if_installed`` starts the new version in this process."""

    installed: Path | None
    off: str | None
    auto: AutoUpdater | None = None
    restart_requested: bool = False
    new_version: str = ""
    argv: list[str] = field(default_factory=lambda: sys.argv[1:])
    execv: Callable[[str, list[str]], object] = os.execv  # a test's stands in
    # the versions in <artifact>.failed: read once, not per health check
    held_back: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.installed is not None:
            self.held_back = sorted(failed_versions(self.installed))

    def start(self) -> None:
        if self.auto is not None:
            auto = self.auto
            threading.Thread(
                target=lambda: asyncio.run(auto.run()), name="auto-update", daemon=True
            ).start()

    def status(self) -> dict[str, object]:
        """For ``/api/v1/health`` ``extra.update`` and ``/metrics`` (no I/O: per request)."""
        held_back = list(self.held_back)
        if self.auto is None:
            return {"automatic": False, "why": self.off, "checks": 0, "held_back": held_back}
        return {"automatic": True, **self.auto.status(), "held_back": held_back}

    def request_restart(self, version: str) -> None:
        """Stop serving as SIGTERM does (in-flight requests finish), then hand over."""
        self.restart_requested, self.new_version = True, version
        log.info("update %s installed: stopping to restart into %s", version, self.installed)
        os.kill(os.getpid(), signal.SIGTERM)

    def reexec_if_installed(self, trial_seconds: float = TRIAL_SECONDS) -> None:
        """After the server stopped: try the staged version, install it if it passed,
        and exec what is installed then (this process becomes it: systemd sees one PID)."""
        if not self.restart_requested or self.installed is None:
            return
        installed, staged = self.installed, staged_path(self.installed)
        try:
            self._hand_over(installed, staged, trial_seconds)
        except OSError as exc:  # the folder refused a rename or a write: run what is there
            log.error("update %s: %s; starting %s as it is", self.new_version, exc, installed)
        log.info("restarting: exec %s %s", installed, " ".join(self.argv))
        logging.shutdown()
        self.execv(str(installed), [str(installed), *self.argv])

    def _hand_over(self, installed: Path, staged: Path, trial_seconds: float) -> None:
        if not staged.exists():
            log.warning("update %s: nothing staged at %s", self.new_version, staged)
            return
        failure = try_release(staged, self.argv, trial_seconds)
        if failure is None:
            backup = keep_backup(installed)
            os.replace(staged, installed)
            fsync_dir(installed.parent)
            log.info(
                "update %s passed its trial: installed (the previous one kept as %s)",
                self.new_version,
                backup,
            )
            return
        log.warning(
            "update %s failed its trial (%s): not installed, %s stays",
            self.new_version,
            failure,
            installed,
        )
        staged.unlink(missing_ok=True)
        remember_failed(installed, self.new_version)
        self.held_back = sorted(failed_versions(installed))


def try_release(artifact: Path, argv: list[str], seconds: float) -> str | None:
    """Run ``artifact`` with ``argv`` (``serve …``) on a spare loopback port, automatic
    updates off, until ``/api/v1/health`` answers 200 within ``seconds``; then stop it.
    None when it did, else why not (one line)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HYDRA_AUTO_UPDATE": "off"}
    command = [str(artifact), *argv, "--listen", f"127.0.0.1:{port}"]  # the last wins
    log.info("trying the new version: %s", " ".join(command))
    try:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return f"it cannot run ({exc.strerror})"
    deadline = time.monotonic() + seconds
    try:
        while True:
            code = proc.poll()
            if code is not None:
                return f"it exited with code {code} before answering /api/v1/health"
            if _healthy(f"http://127.0.0.1:{port}/api/v1/health"):
                return None
            if time.monotonic() > deadline:
                return f"/api/v1/health did not answer 200 within {seconds:g} s"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
    try:
        with opener.open(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


FIRST_CHECK = "HYDRAISSUE_UPDATE_FIRST_CHECK_SECONDS"


def _first_check(env: dict[str, str] | None) -> float | None:
    """``HYDRAISSUE_UPDATE_FIRST_CHECK_SECONDS``: the first check that many seconds after
    start (a fleet staggers its checks by itself; one server may want to look at once)."""
    raw = (os.environ if env is None else env).get(FIRST_CHECK, "")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9:
        log.warning("%s=%r is not a number of seconds; ignored", FIRST_CHECK, raw)
        return None
    return seconds


def serve_updates(config: Config, *, env: dict[str, str] | None = None) -> ServeUpdates:
    """The automatic updates of ``serve`` under ``config`` (off in --dev, with
    HYDRA_AUTO_UPDATE=off, update.enabled false, or outside a release artifact)."""
    from hydraissue import __version__

    installed = running_artifact()
    off = auto_update_off(enabled=config.update_enabled, dev=config.dev, env=env)
    if off is None and installed is None:
        off = "not running from a release artifact"
    if off is not None:
        log.info("automatic updates off (%s)", off)
        return ServeUpdates(installed, off)
    assert installed is not None
    updates = ServeUpdates(installed, None)

    def make() -> Updater:
        return Updater(
            installed,
            __version__,
            release_url=config.update_release_url,
            channel=config.update_channel,
            public_key=config.update_public_key,
            restart=updates.request_restart,
            stage=True,
        )

    updates.auto = AutoUpdater(
        make, config.update_interval_hours * 3600.0, first_delay=_first_check(env)
    )
    updates.start()
    log.info(
        "automatic updates every %d h from %s/%s/%s",
        config.update_interval_hours,
        config.update_release_url.rstrip("/"),
        PROJECT,
        config.update_channel,
    )
    return updates
