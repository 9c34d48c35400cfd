"""Webhook HTTP attempts, sent from a helper process.

A delivery's POST costs the HTTP client about 0.3 ms of Python per attempt (aiohttp,
measured here). In the server's process that time is taken from the one thread that
answers every request and hands each commit back, so with a webhook that wants every
create, creates slowed to 0.59-0.7x of their rate without it. The helper process
(``python -c 'from hydraissue.sender import child; child()'``, this module) does the
HTTP instead, on the other core: the server writes it the request (URL, headers, body)
on a pipe and reads back the outcome (status, error, duration), about 0.03 ms.

Everything that decides what is sent stays in the server: which deliveries exist, their
bodies and signatures, the journal, the retries and their waits. The helper only
attempts, with the same client settings as before: the target policy checked on the
address actually dialled (``GuardedResolver``), no DNS cache, no proxy from the
environment, no redirects followed, at most 64 KB of an answer read, the timeout per
attempt.

The helper starts when a webhook first needs it and ends when its stdin closes (the
server stopped, or died: it never outlives the server). If it dies, the attempts it
had are failed attempts ("the delivery process exited"), retried by the usual policy,
and the next attempt starts a new one. A test that injects its own DNS resolver (to
play a rebinding DNS server) sends in-process (``InProcessSender``): a resolver object
cannot cross a pipe.

Frames, both ways: 8 bytes (two big-endian u32: header length, body length), a JSON
header, the raw body (empty in answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from hydraissue import __version__
from hydraissue.targets import GuardedResolver, TargetPolicy, literal_address

log = logging.getLogger("hydraissue.webhooks")

MAX_RESPONSE = 64 * 1024  # bytes of a receiver's answer read, at most
_FRAME = struct.Struct(">II")
MAX_FRAME = 64 * 1024 * 1024  # a delivery body is at most a few MB (an issue's JSON)
EXITED = "the delivery process exited"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status, or an error, and how long it took."""

    status: int | None
    error: str | None
    duration_ms: float


class Sender(Protocol):
    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Outcome: ...

    def set_policy(self, policy: TargetPolicy) -> None: ...

    async def close(self) -> None: ...


def new_session(policy: TargetPolicy, resolver: AbstractResolver | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolver),
        limit=0,
        use_dns_cache=False,  # every connection asks (and checks) again
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,  # no proxy from the environment
        headers={"User-Agent": f"HydraIssue/{__version__}"},
    )


def literal_refusal(url: str, policy: TargetPolicy) -> str | None:
    """Why the policy refuses a URL whose host is an IP literal. aiohttp dials a literal
    without asking the resolver, so ``GuardedResolver`` never sees it: without this, a
    webhook registered while private targets were allowed kept reaching a private
    address after the policy was tightened."""
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    reason = policy.refusal(address, host) if address is not None else None
    return f"refused to connect to {host}: {reason}" if reason else None


async def post(
    session: aiohttp.ClientSession,
    policy: TargetPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> Outcome:
    """One POST with the seed's timeout; never raises for what the receiver does."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = literal_refusal(url, policy)
    if error is not None:
        return Outcome(None, error, 0.0)
    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers),
            allow_redirects=False,
            # aiohttp rounds timeouts of 5 s and more up to a whole second of loop time
            # unless told otherwise; the seed says 5 s, so 5 s it is.
            timeout=aiohttp.ClientTimeout(total=timeout, ceil_threshold=timeout + 1),
        ) as response:
            status = response.status
            await response.content.read(MAX_RESPONSE)  # never more than this
            if not 200 <= status < 300:
                error = f"HTTP {status}"
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except aiohttp.ClientError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        error = str(exc)
    except ValueError as exc:  # a URL aiohttp cannot use
        error = f"{type(exc).__name__}: {exc}"
    return Outcome(status, error, (time.monotonic() - started) * 1000)


class InProcessSender:
    """Attempts on this process's loop (with a resolver a test controls)."""

    def __init__(self, policy: TargetPolicy, resolver: AbstractResolver | None = None) -> None:
        self.resolver = resolver
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Outcome:
        if self._session is None:
            self._session = new_session(self._policy, self.resolver)
        return await post(self._session, self._policy, url, body, headers, timeout)

    def set_policy(self, policy: TargetPolicy) -> None:
        """New connections are checked against the new policy."""
        self._policy = policy
        old, self._session = self._session, None
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return _FRAME.pack(len(head), len(body)) + head + body


async def _read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at the end of the stream."""
    try:
        head_len, body_len = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        if head_len + body_len > MAX_FRAME:
            raise ValueError(f"a frame of {head_len + body_len} bytes")
        header = orjson.loads(await reader.readexactly(head_len))
        body = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError:
        return None
    return header, body


class HelperProcessSender:
    """Attempts sent by the helper process; one in flight per call, many at once."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._numbers = itertools.count(1)
        self._starting = asyncio.Lock()  # one helper started, however many attempts wait
        self.started = 0  # helpers started since this sender was made (read by tests)

    @property
    def pid(self) -> int | None:
        """The running helper's process id (None before the first attempt)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Outcome:
        proc = await self._running()
        number = next(self._numbers)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        header = {"n": number, "url": url, "headers": dict(headers), "timeout": timeout}
        started = time.monotonic()
        try:
            assert proc.stdin is not None
            proc.stdin.write(_frame(header, body))
            with contextlib.suppress(ConnectionError):  # a dead helper: its reader answers
                await proc.stdin.drain()
            # The helper ends every attempt within its timeout; a helper that does not
            # answer well after it is stuck, and is replaced.
            return await asyncio.wait_for(asyncio.shield(answer), timeout + 10.0)
        except TimeoutError:
            log.error("webhook delivery process did not answer in %.0f s; restarting it", timeout)
            self._kill()
            return Outcome(None, EXITED, (time.monotonic() - started) * 1000)
        finally:
            self._waiting.pop(number, None)

    async def _running(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._proc is None or self._proc.returncode is not None:
                await self._start()
            assert self._proc is not None
            return self._proc

    async def _start(self) -> None:
        env = dict(os.environ)
        # The server's own import path (a venv, a source tree, an unpacked zipapp).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from hydraissue.sender import child; child()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self.started += 1
        assert self._proc.stdin is not None
        self._proc.stdin.write(_frame({"policy": self._policy.as_config()}))
        self._reader = asyncio.create_task(self._read(self._proc), name="webhook-sender")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            frame = await _read_frame(proc.stdout)
            if frame is None:
                break
            header, _ = frame
            answer = self._waiting.get(int(header["n"]))
            if answer is not None and not answer.done():
                answer.set_result(Outcome(header["status"], header["error"], header["ms"]))
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        if proc is self._proc:
            log.error("webhook delivery process exited (code %s)", proc.returncode)
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_result(Outcome(None, EXITED, 0.0))

    def set_policy(self, policy: TargetPolicy) -> None:
        self._policy = policy
        if self._proc is not None and self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.write(_frame({"policy": policy.as_config()}))

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the helper's signal to stop
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_result(Outcome(None, EXITED, 0.0))


# -- the helper process ---------------------------------------------------------------


def child() -> None:
    """The helper's entry point: attempts from stdin, outcomes to stdout, until EOF.

    Ctrl-C in a terminal and a service manager's SIGTERM reach the whole process group;
    the helper leaves its ending to the server (which closes the pipe once its workers
    have stopped), so a shutdown does not record the attempts in flight as failed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_serve_pipe())


async def _serve_pipe() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    session: aiohttp.ClientSession | None = None
    policy = TargetPolicy()
    tasks: set[asyncio.Task[None]] = set()

    async def attempt(
        header: dict[str, Any], body: bytes, session: aiohttp.ClientSession, policy: TargetPolicy
    ) -> None:
        try:
            outcome = await post(
                session, policy, header["url"], body, header["headers"], header["timeout"]
            )
        except Exception as exc:  # an answer in every case: the server waits for one
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}", 0.0)
        writer.write(
            _frame(
                {
                    "n": header["n"],
                    "status": outcome.status,
                    "error": outcome.error,
                    "ms": outcome.duration_ms,
                }
            )
        )

    try:
        while True:
            frame = await _read_frame(reader)
            if frame is None:
                break
            header, body = frame
            if "policy" in header:
                policy = TargetPolicy.from_config(*header["policy"])
                old, session = session, new_session(policy, None)
                if old is not None:
                    closing = loop.create_task(old.close())  # its attempts end first
                    tasks.add(closing)
                    closing.add_done_callback(tasks.discard)
                continue
            assert session is not None, "a policy comes first"
            task = loop.create_task(attempt(header, body, session, policy))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        if session is not None:
            await session.close()
