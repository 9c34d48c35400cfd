"""The performance targets of HydraIssue, measured in one run on this machine.

    .venv/bin/python tools/bench.py [--issues 10000] [--duration 8] [--data-dir DIR] [--keep]
        [--json OUT.json] [--baseline-json OTHER.json]

(``make bench`` runs it with the defaults.) Not a test: it prints figures and a verdict
per target, and exits 1 when any target fails.

What one run does, in order:

1. seeds a data dir with ``tools/seed_data.py`` (10,000 issues / 100,000 events by
   default; real storage code) in a temp folder, or reuses ``--data-dir``;
2. times a full ``hydraissue replay`` (subprocess, wall clock, warm page cache);
3. starts the real server (``hydraissue serve``, subprocess) and times start-up from
   spawning the process until ``GET /api/v1/health`` answers; the server log must say
   the index was current (0 issues replayed);
4. waits until the server's background warm-up of full issues has finished (its
   "warmed N issues" log line) and then pages once through every issue, so warm-up is
   not inside any measurement;
5. starts a bare aiohttp server beside it (this file with ``--serve-bare``, subprocess)
   whose one handler returns a fixed JSON body: the real issue whose JSON size is
   closest to the mean;
6. drives, one after the other, with 16 concurrent keep-alive connections on loopback
   for ``--duration`` seconds each (after ``--warmup`` seconds of unmeasured load):
   get-by-id on random live ids and two filtered list pages of 50 full issues at random
   offsets, each between two runs of the bare handler (the reference of its ratio is
   their mean: this machine's speed drifts within minutes), and the admin's HTML list
   page of the first filter (admin bearer token); reads the real server's VmRSS from
   /proc (the memory target: the seeded issues, all loaded and cached); then durable creates
   (``POST /api/v1/issues``), last because they add issues, then the same creates
   while 50 Server-Sent Events clients (a helper process: this file with
   ``--sse-clients``) read every event of ``/api/v1/events``, then the fan-out
   latency: creates one after another, each timed from its 2xx to the event's
   arrival at each of the 50 clients; then, with 3 webhooks registered (a receiver
   answering at once, one that never answers, a port that refuses connections; a
   helper process: this file with ``--serve-receivers``), the creates again, each
   round right after the same creates with the webhooks switched off (the pair gives
   the ratio: create rates drift as the data dir grows), get-by-id and the open list
   while the failing webhooks' deliveries are retried, then the same reads with the
   webhooks switched off, and paced creates timed from the 2xx to the delivery's
   arrival at the healthy receiver. Between the reads and the creates it times
   ``/api/v1/stats`` (500 calls), the quality report for the last 30 days (5 calls)
   and the admin's ``/admin/stats`` page (its first call, then 200), then memory per
   stored issue: creates until the bounded working sets (the newest events, the hot
   issues) are full, then the VmRSS that 10,000 more add (both readings once background
   work has caught up), per issue, beside the JSON the API returns for such an issue
   (the measured creates come after it).
   With ``--rounds N`` each scenario runs N times and the fastest round counts;
7. runs the raw disk baselines in-process, with both servers stopped, in the data dir's
   filesystem: the target's baseline, one loop appending 300 bytes + fsync to a file
   (the cost of one durable append, back to back), and for information 16 such loops
   in threads, each with its own file (what the disk does with concurrency), and one
   loop creating a new file + fsync + folder fsync (what a create pays the file system
   for its new log, before anything else);
8. prints requests/s, p50, p99, the CPU used by the server (with its webhook helper
   process), the load generator and anything else on the machine (the machine has 2
   cores; other load makes a run noisy), the ratios and PASS/FAIL.

Load generator: ``wrk`` (C, one thread, a generated Lua script that picks a random
path and body per request) when it is on PATH (Debian: ``apt-get install wrk``);
otherwise a multiprocess aiohttp client (2 processes x 8 keep-alive connections),
which costs much more CPU on a 2-core machine and so understates every rate.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_TOKEN = "bench-api-token"
ADMIN_TOKEN = "bench-admin-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOST = "127.0.0.1"
PAGE = 50
NOISY_OTHER_CPU = 0.25
RAW_RECORD = 300

TARGETS = {
    "get_ratio": 0.6,
    "list_ratio": 0.3,
    "create_ratio": 0.3,
    "create_sse_ratio": 0.8,  # creates with 50 SSE clients connected / creates without
    "sse_p99_ms": 50.0,  # write's 2xx -> event at each of 50 SSE clients
    "flat_create_ratio": 0.8,  # creates at this size / creates at the baseline size
    "flat_create_p99_ms": 100.0,
    "replay_s": 30.0,
    "create_hooks_ratio": 0.8,  # creates with 3 webhooks registered / creates without
    # Reads with 3 webhooks delivering / the same reads with them off: "unchanged", within
    # the spread of two measures of one load on this machine (10% for creates, more for
    # reads)
    "reads_hooks_ratio": 0.9,
    "hook_p99_ms": 100.0,  # write's 2xx -> delivery at a healthy local receiver
    "stats_p99_ms": 5.0,
    "admin_stats_p99_ms": 50.0,  # /admin/stats once its figures are computed
    "quality_ms": 500.0,  # the quality report for the last 30 days
    "admin_list_ratio": 0.5,  # the admin list page (HTML) / the JSON list, same filter
    "memory_per_issue_ratio": 2.0,  # memory one more stored issue costs / its JSON
}
SSE_CLIENTS = 50
# The reads that are a ratio to the bare handler, and the bare runs around them: bare,
# get, bare-2, list-open, bare-3, list-bug, bare-4; each ratio is to the mean of the bare
# runs on either side. With one bare run at the start, a 100,000-issue run read
# get-by-id 0.57x: bare ran at 20,400 req/s there and 12,300 in the 10,000-issue run an
# hour before, while get-by-id itself ran at 11,600 and 10,900; and bare runs a minute
# apart drift by a third (17,980, 22,926, 25,158 req/s in one run).
TO_BARE = ("get", "list-open", "list-bug")
BARE_RUNS = ("bare", *(f"bare-{n}" for n in range(2, len(TO_BARE) + 2)))


def bare_reference(loads: dict[str, Load], name: str) -> float:
    """The bare handler's rate around a read of TO_BARE: the mean of the runs beside it."""
    at = TO_BARE.index(name)
    return (loads[BARE_RUNS[at]].rate + loads[BARE_RUNS[at + 1]].rate) / 2


def size_targets(issues: int) -> tuple[float, float]:
    """(start-up seconds, resident MB) allowed for a data dir of ``issues`` issues."""
    return (2.0, 300.0) if issues <= 20_000 else (3.0, 400.0)


# -- results ---------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    """One measured scenario."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    server_cpu: float | None = None  # cores used by the server process (1.0 = one core)
    client_cpu: float | None = None  # cores used by the load generator
    other_cpu: float | None = None  # cores used by anything else on the machine (noise)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class Scenario:
    """What a load generator sends: a random path (and body) from fixed lists."""

    name: str
    method: str
    paths: list[str]
    bodies: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    issues: int = 0
    events: int = 0
    seed_s: float | None = None
    replay_s: float = 0.0
    replay_line: str = ""
    startup_s: float = 0.0
    startup_log: str = ""
    index_current: bool = False
    warm_log: str = ""
    rss_mb: float = 0.0  # after the read scenarios: the seeded issues, all cached
    rss_issues: int = 0
    rss_after_creates_mb: float = 0.0  # informational: creates add thousands of issues
    issues_after_creates: int = 0
    created_json_bytes: float = 0.0
    bytes_per_created: float = 0.0
    growth_from: tuple[float, int] | None = None  # the memory phase: (VmRSS MB, live issues)
    growth_to: tuple[float, int] | None = None
    hwm_mb: float = 0.0
    bare_body_bytes: int = 0
    generator: str = ""
    loads: dict[str, Load] = field(default_factory=dict)
    sse_p50_ms: float = 0.0
    sse_p99_ms: float = 0.0
    sse_from_send_p99_ms: float = 0.0  # from sending the write: includes its commit
    sse_samples: int = 0
    sse_missing: int = 0  # (event, client) pairs that never arrived
    hook_p50_ms: float = 0.0
    hook_p99_ms: float = 0.0
    hook_samples: int = 0
    hook_missing: int = 0  # acknowledged creates the healthy receiver never got
    hook_backlog_s: float = 0.0  # after the create load: until the healthy one caught up
    stats_p50_ms: float = 0.0
    stats_p99_ms: float = 0.0
    admin_stats_first_ms: float = 0.0
    admin_stats_p50_ms: float = 0.0
    admin_stats_p99_ms: float = 0.0
    quality_ms: list[float] = field(default_factory=list)
    quality_line: str = ""
    baseline: dict[str, Any] | None = None  # a --baseline-json report (another size)


# -- small helpers ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, str]:
    found: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            found[key] = value.strip()
    return found


def kib_to_mb(value: str) -> float:
    return int(value.split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        raw = handle.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children: the server's webhook delivery
    helper (hydraissue/sender.py) works for it."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def machine_busy() -> float:
    """CPU seconds of all cores in user, nice, system and steal time.

    irq/softirq time is left out: loopback TCP of the benchmark's own traffic lands
    there and is charged to no process. Steal counts: those cycles were not ours.
    """
    with open("/proc/stat") as handle:
        ticks = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, steal = ticks[0], ticks[1], ticks[2], ticks[7]
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def say(text: str) -> None:
    print(text, flush=True)


class Processes:
    """Every subprocess the bench starts, stopped for sure at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
        """SIGTERM (the server flushes its projections), then SIGKILL if it hangs."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.running:
            self.running.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc, timeout=10.0)


# -- load generators -------------------------------------------------------------------

WRK_SCRIPT = """\
-- generated by tools/bench.py: a random path (and body) from files per request
local paths_file = %(paths)s
local bodies_file = %(bodies)s
local method = %(method)s
%(headers)s
local paths = {}
local bodies = {}
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  for line in io.lines(paths_file) do paths[#paths + 1] = line end
  if bodies_file ~= "" then
    for line in io.lines(bodies_file) do bodies[#bodies + 1] = line end
  end
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  local body = nil
  if #bodies > 0 then body = bodies[math.random(#bodies)] end
  return wrk.format(method, paths[math.random(#paths)], nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%%d duration_us=%%d status_errors=%%d socket_errors=%%d "
    .. "p50_us=%%d p99_us=%%d\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
_WRK_RESULT = re.compile(
    r"BENCH-RESULT requests=(\d+) duration_us=(\d+) status_errors=(\d+) "
    r"socket_errors=(\d+) p50_us=(\d+) p99_us=(\d+)"
)


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII is a valid Lua string literal


class WrkDriver:
    def __init__(self, wrk: str, workdir: Path, connections: int, threads: int) -> None:
        self.wrk = wrk
        self.workdir = workdir
        self.connections = connections
        self.threads = threads

    def describe(self) -> str:
        version = subprocess.run([self.wrk, "-v"], capture_output=True, text=True).stdout
        first = version.strip().splitlines()[0] if version.strip() else "wrk"
        return (
            f"{first.split(' [')[0]} ({self.threads} thread, {self.connections} keep-alive "
            "connections, Lua script: random path/body per request)"
        )

    def script(self, scenario: Scenario) -> Path:
        base = self.workdir / f"wrk-{scenario.name}"
        paths = base.with_suffix(".paths")
        paths.write_text("\n".join(scenario.paths) + "\n")
        bodies = ""
        if scenario.bodies:
            bodies_path = base.with_suffix(".bodies")
            bodies_path.write_text("\n".join(scenario.bodies) + "\n")
            bodies = str(bodies_path)
        headers = "\n".join(
            f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in scenario.headers.items()
        )
        lua = base.with_suffix(".lua")
        lua.write_text(
            WRK_SCRIPT
            % {
                "paths": lua_string(str(paths)),
                "bodies": lua_string(bodies),
                "method": lua_string(scenario.method),
                "headers": headers,
            }
        )
        return lua

    def run(self, port: int, scenario: Scenario, seconds: float) -> Load:
        lua = self.script(scenario)
        argv = [
            self.wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            f"http://{HOST}:{port}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        match = _WRK_RESULT.search(done.stdout)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        requests, duration_us, status_errors, socket_errors, p50, p99 = map(int, match.groups())
        return Load(
            name=scenario.name,
            requests=requests,
            seconds=duration_us / 1e6,
            p50_ms=p50 / 1000,
            p99_ms=p99 / 1000,
            errors=status_errors + socket_errors,
        )


@dataclass(slots=True)
class WorkerResult:
    requests: int
    seconds: float
    errors: int
    latencies: list[float]


def _client_worker(
    port: int, scenario: Scenario, connections: int, seconds: float, seed: int
) -> WorkerResult:
    import asyncio

    return asyncio.run(_client_loop(port, scenario, connections, seconds, seed))


async def _client_loop(
    port: int, scenario: Scenario, connections: int, seconds: float, seed: int
) -> WorkerResult:
    import asyncio

    import aiohttp

    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    headers = dict(scenario.headers)
    async with aiohttp.ClientSession(
        f"http://{HOST}:{port}", connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def one(deadline: float) -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                path = rng.choice(scenario.paths)
                body = rng.choice(scenario.bodies).encode() if scenario.bodies else None
                try:
                    async with session.request(scenario.method, path, data=body) as response:
                        await response.read()
                        if response.status >= 400:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(one(began + seconds) for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return WorkerResult(len(latencies), elapsed, errors, latencies)


class AiohttpDriver:
    """Fallback load generator: ``processes`` x (connections / processes) aiohttp clients."""

    def __init__(self, connections: int, processes: int = 2) -> None:
        self.connections = connections
        self.processes = processes

    def describe(self) -> str:
        return (
            f"aiohttp client ({self.processes} processes x {self.connections // self.processes} "
            "keep-alive connections; costs far more CPU than wrk on 2 cores, so every "
            "rate is understated)"
        )

    def run(self, port: int, scenario: Scenario, seconds: float) -> Load:
        per = max(1, self.connections // self.processes)
        with ProcessPoolExecutor(self.processes, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_client_worker, port, scenario, per, seconds, i)
                for i in range(self.processes)
            ]
            results = [f.result() for f in futures]
        latencies = sorted(x for r in results for x in r.latencies)
        rate = sum(r.requests / r.seconds for r in results if r.seconds)
        seconds_used = max(r.seconds for r in results)
        return Load(
            name=scenario.name,
            requests=round(rate * seconds_used),
            seconds=seconds_used,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            errors=sum(r.errors for r in results),
        )


Driver = WrkDriver | AiohttpDriver


def measure(
    driver: Driver, port: int, pid: int, scenario: Scenario, seconds: float, warmup: float
) -> Load:
    if warmup > 0:
        driver.run(port, scenario, warmup)
    server, client, busy = tree_cpu(pid), children_cpu(), machine_busy()
    wall = time.monotonic()
    load = driver.run(port, scenario, seconds)
    wall = time.monotonic() - wall
    server = tree_cpu(pid) - server
    client = children_cpu() - client
    load.server_cpu, load.client_cpu = server / wall, client / wall
    load.other_cpu = max(0.0, machine_busy() - busy - server - client) / wall
    say(
        f"  {scenario.name:<10} {load.rate:9.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
        f"p99 {load.p99_ms:7.2f} ms  errors {load.errors}  CPU: server {load.server_cpu:.0%} "
        f"client {load.client_cpu:.0%} other {load.other_cpu:.0%}"
    )
    return load


# -- the raw disk baseline -------------------------------------------------------------


def raw_append_fsync(folder: Path, writers: int, seconds: float, name: str) -> Load:
    """``writers`` threads, each appending RAW_RECORD bytes + fsync to its own file."""
    folder.mkdir(parents=True, exist_ok=True)
    record = (b"x" * (RAW_RECORD - 1)) + b"\n"
    latencies: list[list[float]] = [[] for _ in range(writers)]
    start = threading.Barrier(writers + 1)
    deadline = [0.0]

    def writer(index: int) -> None:
        fd = os.open(folder / f"writer-{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        mine = latencies[index]
        try:
            start.wait()
            while (began := time.perf_counter()) < deadline[0]:
                os.write(fd, record)
                os.fsync(fd)
                mine.append(time.perf_counter() - began)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    shutil.rmtree(folder, ignore_errors=True)
    merged = sorted(x for per in latencies for x in per)
    load = Load(
        name=name,
        requests=len(merged),
        seconds=elapsed,
        p50_ms=percentile(merged, 50) * 1000,
        p99_ms=percentile(merged, 99) * 1000,
    )
    say(
        f"  {name:<14} {load.rate:9.0f} op/s   p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms"
    )
    return load


def raw_create_fsync(folder: Path, seconds: float, name: str) -> Load:
    """For information: what a new file costs this file system (a create needs one)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = (b"x" * (RAW_RECORD - 1)) + b"\n"
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + seconds
    count = 0
    while (started := time.perf_counter()) < deadline:
        fd = os.open(folder / f"new-{count}.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, record)
        os.fsync(fd)
        os.close(fd)
        dir_fd = os.open(folder, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        count += 1
        latencies.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - began
    shutil.rmtree(folder, ignore_errors=True)
    latencies.sort()
    load = Load(
        name, count, elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    )
    say(
        f"  {name:<14} {load.rate:9.0f} op/s   p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms"
    )
    return load


# -- the bare aiohttp baseline (runs as its own process) -------------------------------


def serve_bare(port: int, body_file: Path) -> None:
    from aiohttp import web

    body = body_file.read_bytes()

    async def issue(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/bare/{id}", issue)
    app.router.add_get("/health", health)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


# -- Server-Sent Events clients (run as their own process) -----------------------------

_ISSUE_CREATED = re.compile(rb'event: issue\.created\ndata: \{"pos":\d+,"issue_id":(\d+)')


def serve_sse_clients(port: int, count: int, out: Path, parse: bool) -> None:
    """Hold ``count`` SSE connections to the events feed and read them as they come.

    One thread, non-blocking sockets: reading costs little CPU beside the server's.
    With ``parse``, record (client, issue id, arrival time) of every issue.created
    frame; time.monotonic() is the machine's CLOCK_MONOTONIC, shared with the writer.
    """
    import selectors

    request = (
        f"GET /api/v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {API_TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()
    socks: dict[int, socket.socket] = {}
    tails: dict[int, bytes] = {}
    for index in range(count):
        sock = socket.create_connection((HOST, port))
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks[index] = sock
        tails[index] = b""
    arrivals: list[tuple[int, int, float]] = []
    stopping = [False]
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__(0, True))
    connected: set[int] = set()
    while not stopping[0]:
        for key, _ in selector.select(0.2):
            index = key.data
            try:
                data = socks[index].recv(1 << 16)
            except BlockingIOError:
                continue
            now = time.monotonic()
            if not data:
                selector.unregister(socks[index])
                continue
            if index not in connected and b": connected" in data:
                connected.add(index)
                if len(connected) == count:
                    print("ready", flush=True)
            if parse:
                buffer = tails[index] + data
                cut = buffer.rfind(b"\n\n")
                complete, tails[index] = (
                    (buffer[: cut + 2], buffer[cut + 2 :]) if cut >= 0 else (b"", buffer)
                )
                for match in _ISSUE_CREATED.finditer(complete):
                    arrivals.append((index, int(match.group(1)), now))
    out.write_text(json.dumps(arrivals))


class SseClients:
    """The helper process above, started and stopped around a scenario."""

    def __init__(self, procs: Processes, workdir: Path, port: int, *, parse: bool) -> None:
        self.out = workdir / f"sse-{'parse' if parse else 'drain'}.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--sse-clients", str(SSE_CLIENTS)]
        argv += ["--sse-port", str(port), "--sse-out", str(self.out)]
        if parse:
            argv.append("--sse-parse")
        log = workdir / "sse.log"
        self.procs = procs
        self.proc = procs.start(argv, log, dict(os.environ))
        deadline = time.monotonic() + 30
        while "ready" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SSE clients did not connect:\n{log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> list[tuple[int, int, float]]:
        self.procs.stop(self.proc)
        arrivals: list[tuple[int, int, float]] = json.loads(self.out.read_text())
        return arrivals


def paced_creates(port: int, seconds: float) -> tuple[dict[int, float], dict[int, float]]:
    """Creates one after another (about 100/s): per issue id, when its 2xx was read and
    when its request was sent (time.monotonic(), shared with the helper processes)."""
    acked: dict[int, float] = {}
    sent: dict[int, float] = {}
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    body = create_bodies(1)[0]
    headers = {**AUTH, "Content-Type": "application/json"}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.monotonic()
            conn.request("POST", "/api/v1/issues", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status == 201:
                issue_id = json.loads(data)["id"]
                acked[issue_id] = time.monotonic()
                sent[issue_id] = began
            time.sleep(0.01)
        time.sleep(0.5)  # the last events on their way
    finally:
        conn.close()
    return acked, sent


def sse_latency(procs: Processes, workdir: Path, port: int, seconds: float, report: Report) -> None:
    """Paced creates; for each, the time from its 2xx to the issue.created event at each
    of the 50 SSE clients."""
    clients = SseClients(procs, workdir, port, parse=True)
    try:
        acked, sent = paced_creates(port, seconds)
    finally:
        arrivals = clients.stop()
    seen = {(client, issue_id): at for client, issue_id, at in arrivals}
    pairs = [
        (seen[(client, issue_id)], issue_id)
        for issue_id in acked
        for client in range(SSE_CLIENTS)
        if (client, issue_id) in seen
    ]
    # An event may reach the clients before its writer has read its own 2xx (the fan-out
    # runs inside the commit): that counts as 0 ms.
    delays = sorted(max(0.0, at - acked[issue_id]) * 1000 for at, issue_id in pairs)
    from_send = sorted((at - sent[issue_id]) * 1000 for at, issue_id in pairs)
    report.sse_samples = len(delays)
    report.sse_missing = len(acked) * SSE_CLIENTS - len(delays)
    report.sse_p50_ms = percentile(delays, 50)
    report.sse_p99_ms = percentile(delays, 99)
    report.sse_from_send_p99_ms = percentile(from_send, 99)
    say(
        f"  SSE fan-out: {len(acked)} creates x {SSE_CLIENTS} clients, 2xx -> event p50 "
        f"{report.sse_p50_ms:.2f} ms, p99 {report.sse_p99_ms:.2f} ms (request sent -> event "
        f"p50 {percentile(from_send, 50):.2f} ms, p99 {report.sse_from_send_p99_ms:.2f} ms), "
        f"{report.sse_missing} never arrived"
    )


# -- webhooks: receivers (their own process) and the fan-out phase --------------------


def serve_receivers(port: int) -> None:
    """Webhook receivers on one port: ``/fast`` answers at once and records when each
    issue's delivery arrived; ``/hang`` never answers (the server's 5 s timeout ends it)."""
    import asyncio

    from aiohttp import web

    arrivals: list[tuple[int, float]] = []

    async def fast(request: web.Request) -> web.Response:
        body = await request.read()
        arrivals.append((json.loads(body)["data"]["id"], time.monotonic()))
        return web.Response(status=204)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(status=204)

    async def seen(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/fast", fast)
    app.router.add_post("/hang", hang)
    app.router.add_get("/arrivals", seen)
    app.router.add_get("/health", health)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


def start_helper(
    procs: Processes, workdir: Path, name: str, argv: list[str]
) -> tuple[subprocess.Popen[bytes], int]:
    """This file as a helper server (``--serve-bare``, ``--serve-receivers``) on a free
    port, once its /health answers."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), *argv, str(port)]
    log = workdir / f"{name}.log"
    proc = procs.start(command, log, dict(os.environ))
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, "/health", timeout=2)[0] == 200:
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} server did not start:\n{log.read_text()}")
        time.sleep(0.02)


def arrivals_at(port: int) -> dict[int, float]:
    """Issue id -> when its first delivery reached the fast receiver."""
    first: dict[int, float] = {}
    for issue_id, at in json.loads(http_get(port, "/arrivals", timeout=30)[2]):
        first.setdefault(issue_id, at)
    return first


def api_write(port: int, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        answer = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer!r}")
        result: dict[str, Any] = json.loads(answer)
        return result
    finally:
        conn.close()


def set_active(port: int, hooks: list[str], active: bool) -> None:
    for hook in hooks:
        api_write(port, "PATCH", f"/api/v1/webhooks/{hook}", {"active": active})


def register_webhooks(port: int, receiver: int) -> list[str]:
    """The three receivers of the target: answering, hanging, refusing connections."""
    refusing = free_port()  # nothing listens there
    urls = [
        f"http://{HOST}:{receiver}/fast",
        f"http://{HOST}:{receiver}/hang",
        f"http://{HOST}:{refusing}/refused",
    ]
    body = {"events": ["issue.created"], "secret": "bench-secret"}
    return [api_write(port, "POST", "/api/v1/webhooks", {**body, "url": u})["id"] for u in urls]


def webhook_phase(
    driver: Driver,
    server: tuple[subprocess.Popen[bytes], int],
    args: argparse.Namespace,
    report: Report,
    procs: Processes,
    workdir: Path,
    create: Scenario,
    reads: Sequence[Scenario],
) -> None:
    """Creates and reads again with 3 webhooks registered, each beside the same load with
    the webhooks switched off, then the delivery latency to the healthy receiver."""
    proc, port = server
    _, receiver = start_helper(procs, workdir, "receivers", ["--serve-receivers"])
    hook_ids = register_webhooks(port, receiver)
    say(
        f"  with 3 webhooks registered (http://{HOST}:{receiver}/fast answering, /hang "
        "hanging, and a port refusing connections), each round measured beside the same "
        "creates with the webhooks switched off:"
    )
    paired = replace(create, name="create-paired")
    hooks = replace(create, name="create-hooks")
    expected = len(arrivals_at(receiver))
    for round_no in range(1, args.rounds + 1):
        if args.rounds > 1:
            say(f"  round {round_no} of {args.rounds}")
        set_active(port, hook_ids, False)
        keep_best(report, measure(driver, port, proc.pid, paired, args.duration, args.warmup))
        set_active(port, hook_ids, True)
        before = live_count(port)
        keep_best(report, measure(driver, port, proc.pid, hooks, args.duration, args.warmup))
        expected += live_count(port) - before
        started = time.monotonic()
        while len(arrivals_at(receiver)) < expected and time.monotonic() - started < 120:
            time.sleep(0.2)
        report.hook_backlog_s = max(report.hook_backlog_s, time.monotonic() - started)
        say(
            f"  the healthy receiver had {len(arrivals_at(receiver))} of {expected} deliveries "
            f"{time.monotonic() - started:.1f}s after the load"
        )
        # Reads while the hanging and the refused webhooks' queues are retried, then the
        # same reads with the webhooks switched off.
        for active, suffix in ((True, "hooks"), (False, "paired")):
            set_active(port, hook_ids, active)
            for scenario in reads:
                named = replace(scenario, name=f"{scenario.name}-{suffix}")
                keep_best(
                    report, measure(driver, port, proc.pid, named, args.duration, args.warmup)
                )
        set_active(port, hook_ids, True)
    acked, sent = paced_creates(port, min(args.duration, 5.0))
    arrived = arrivals_at(receiver)
    delays = sorted(max(0.0, arrived[i] - acked[i]) * 1000 for i in acked if i in arrived)
    from_send = sorted((arrived[i] - sent[i]) * 1000 for i in acked if i in arrived)
    report.hook_samples = len(delays)
    report.hook_missing = len(acked) - len(delays)
    report.hook_p50_ms = percentile(delays, 50)
    report.hook_p99_ms = percentile(delays, 99)
    say(
        f"  delivery to the healthy receiver: {len(acked)} paced creates, 2xx -> delivery "
        f"p50 {report.hook_p50_ms:.2f} ms, p99 {report.hook_p99_ms:.2f} ms (request sent -> "
        f"delivery p99 {percentile(from_send, 99):.2f} ms), {report.hook_missing} missing"
    )


def insight_latency(port: int, report: Report) -> None:
    """``/api/v1/stats`` 500 times and the quality report for the last 30 days of the
    history (up to its latest event) 5 times, one request after another on one
    keep-alive connection (client-side times)."""
    head = json.loads(http_get(port, "/api/v1/health")[2])["extra"]["position"]
    tail = json.loads(http_get(port, f"/api/v1/events?after={max(0, head - 10)}", AUTH)[2])
    until = tail["events"][-1]["at"]
    end = calendar.timegm(time.strptime(until[:19], "%Y-%m-%dT%H:%M:%S"))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end - 30 * 86400))
    conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def timed(path: str, headers: dict[str, str] = AUTH) -> tuple[float, bytes]:
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return (time.perf_counter() - began) * 1000, body

    try:
        for _ in range(50):
            timed("/api/v1/stats")  # warm
        stats = sorted(timed("/api/v1/stats")[0] for _ in range(500))
        runs = [timed(f"/api/v1/reports/quality?since={since}&until={until}") for _ in range(5)]
        # The admin's stats page: the first request computes its 12-week figures.
        report.admin_stats_first_ms = timed("/admin/stats", ADMIN_AUTH)[0]
        admin = sorted(timed("/admin/stats", ADMIN_AUTH)[0] for _ in range(200))
    finally:
        conn.close()
    report.admin_stats_p50_ms = percentile(admin, 50)
    report.admin_stats_p99_ms = percentile(admin, 99)
    say(
        f"  GET /admin/stats (HTML, charts): first {report.admin_stats_first_ms:.0f} ms, then "
        f"p50 {report.admin_stats_p50_ms:.2f} ms, p99 {report.admin_stats_p99_ms:.2f} ms"
    )
    report.stats_p50_ms = percentile(stats, 50)
    report.stats_p99_ms = percentile(stats, 99)
    report.quality_ms = [ms for ms, _ in runs]
    counts = json.loads(runs[-1][1])["counts"]
    report.quality_line = f"{since} to {until}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    say(
        f"  GET /api/v1/stats: p50 {report.stats_p50_ms:.2f} ms, p99 "
        f"{report.stats_p99_ms:.2f} ms; quality report, last 30 days ({report.quality_line}): "
        + ", ".join(f"{ms:.0f}" for ms in report.quality_ms)
        + " ms"
    )


# -- request material ------------------------------------------------------------------

_WORDS = (
    "The report form shows a spinner forever after submitting with an attachment. "
    "It started after the last deploy and happens for roughly one request in five. "
    "Steps: open the form, attach a file, submit. Expected a confirmation page with "
    "the issue key; instead the request times out and the issue appears twice later."
)


def create_bodies(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    bodies = []
    for i in range(count):
        bodies.append(
            json.dumps(
                {
                    "title": f"Bench report {i}: spinner never stops on the report form",
                    "description": _WORDS,
                    "project": rng.choice(["intake", "web-console", "nebula", "storage"]),
                    "category": rng.choice(["bug", "feature", "improvement", "question"]),
                    "priority": rng.choice(["low", "medium", "high", "critical", None]),
                    "reporter": rng.choice(["bench", "alice", "bob", "release-bot"]),
                    "custom_fields": {"os": rng.choice(["linux", "macos"]), "run": i},
                },
                ensure_ascii=True,
            )
        )
    return bodies


def page_paths(port: int, query: str) -> tuple[int, list[str]]:
    status, headers, _ = http_get(port, f"/api/v1/issues?{query}&limit={PAGE}", AUTH)
    if status != 200:
        raise RuntimeError(f"GET /api/v1/issues?{query} answered {status}")
    total = int(headers["x-total-count"])
    offsets = range(0, max(1, total - PAGE + 1), PAGE)
    return total, [f"/api/v1/issues?{query}&limit={PAGE}&offset={o}" for o in offsets]


def all_issues(port: int) -> Iterator[dict[str, Any]]:
    """Page through every live issue (limit 1000), which also touches every full issue."""
    offset = 0
    while True:
        status, headers, body = http_get(port, f"/api/v1/issues?limit=1000&offset={offset}", AUTH)
        if status != 200:
            raise RuntimeError(f"GET /api/v1/issues answered {status}: {body[:200]!r}")
        page = json.loads(body)
        yield from page
        offset += len(page)
        if not page or offset >= int(headers["x-total-count"]):
            return


# -- the run ---------------------------------------------------------------------------


def seeded_dir(args: argparse.Namespace, workdir: Path, report: Report) -> Path:
    data_dir: Path = args.data_dir or workdir / "data"
    events = data_dir / "events"
    if events.is_dir() and any(events.iterdir()):
        say(f"reusing data dir {data_dir} (not reseeded)")
        return data_dir
    say(f"seeding {data_dir} with {args.issues} issues x ~10 events (tools/seed_data.py) ...")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "seed_data.py"),
            str(data_dir),
            "--issues",
            str(args.issues),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{done.stdout}\n{done.stderr}")
    report.seed_s = time.monotonic() - started
    say(f"  {done.stdout.strip()}")
    return data_dir


def hydraissue_argv() -> list[str]:
    script = Path(sys.executable).parent / "hydraissue"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hydraissue.cli"]


def run_replay(data_dir: Path, config: Path, env: dict[str, str], report: Report) -> None:
    say("timing a full replay (hydraissue replay, subprocess) ...")
    started = time.perf_counter()
    done = subprocess.run(
        [*hydraissue_argv(), "replay", "--config", str(config), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
    )
    report.replay_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay failed:\n{done.stdout}\n{done.stderr}")
    report.replay_line = done.stdout.strip().splitlines()[-1]
    match = re.search(r"replayed (\d+) events into (\d+) issues", report.replay_line)
    if match:
        report.events, report.issues = int(match.group(1)), int(match.group(2))
    say(f"  {report.replay_s:.2f}s wall: {report.replay_line}")


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if regex.search(line):
                return line
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    return ""


def start_server(
    procs: Processes, data_dir: Path, config: Path, env: dict[str, str], log: Path, report: Report
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [*hydraissue_argv(), "serve", "--config", str(config), "--data-dir", str(data_dir)]
    argv += ["--listen", f"{HOST}:{port}"]
    say("starting the real server and timing start-up until /api/v1/health answers ...")
    started = time.perf_counter()
    proc = procs.start(argv, log, env)
    deadline = started + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, body = http_get(port, "/api/v1/health", timeout=5)
            if status == 200:
                report.startup_s = time.perf_counter() - started
                issues = json.loads(body)["extra"]["issues"]
                break
        if time.perf_counter() > deadline:
            raise RuntimeError("server did not answer /api/v1/health within 60 s")
        time.sleep(0.005)
    report.startup_log = wait_for_line(log, r"loaded \d+ issues", proc, 5)
    report.index_current = bool(re.search(r"\(0 folded from their logs\)", report.startup_log))
    say(
        f"  {report.startup_s:.3f}s to a healthy answer ({issues} live issues); server log: "
        f"{report.startup_log.split(': ', 1)[-1]}"
    )
    if not report.index_current:
        say("  WARNING: the index was not current at start-up (see the log line above)")
    return proc, port


def warm_up(proc: subprocess.Popen[bytes], port: int, log: Path, report: Report) -> list[int]:
    say("waiting for the server's background warm-up (full issues) before measuring reads ...")
    report.warm_log = wait_for_line(log, r"warmed \d+ issues", proc, 120)
    started = time.monotonic()
    ids = [issue["id"] for issue in all_issues(port)]
    say(
        f"  server log: {report.warm_log.split(': ', 1)[-1] or '(no warm-up line)'}; then paged "
        f"through all {len(ids)} issues once in {time.monotonic() - started:.2f}s"
    )
    return ids


def keep_best(report: Report, load: Load) -> None:
    """With several rounds, the fastest one counts: interference only ever slows a run."""
    best = report.loads.get(load.name)
    if best is None or load.rate > best.rate:
        report.loads[load.name] = load


def live_count(port: int) -> int:
    count: int = json.loads(http_get(port, "/api/v1/health")[2])["extra"]["issues"]
    return count


def bare_body(port: int, ids: list[int]) -> bytes:
    """The JSON of the real issue whose size is closest to the mean issue size."""
    sample = ids[:: max(1, len(ids) // 500)]
    bodies = {i: http_get(port, f"/api/v1/issues/{i}", AUTH)[2] for i in sample}
    mean = sum(len(b) for b in bodies.values()) / len(bodies)
    return min(bodies.values(), key=lambda b: abs(len(b) - mean))


def drive(
    driver: Driver,
    server: tuple[subprocess.Popen[bytes], int],
    bare: tuple[subprocess.Popen[bytes], int],
    ids: list[int],
    args: argparse.Namespace,
    report: Report,
    procs: Processes,
    workdir: Path,
) -> None:
    """The bare handler first, then the real server's scenarios, one after the other."""
    proc, port = server
    open_total, open_paths = page_paths(port, "status=open")
    bug_total, bug_paths = page_paths(port, "stage=active&category=bug")
    scenarios = [
        Scenario("get", "GET", [f"/api/v1/issues/{i}" for i in ids], headers=AUTH),
        Scenario("list-open", "GET", open_paths, headers=AUTH),
        Scenario("list-bug", "GET", bug_paths, headers=AUTH),
        # The same pages of the same filter, as the admin's HTML list.
        Scenario(
            "admin-list",
            "GET",
            [p.replace("/api/v1/issues?", "/admin?", 1) for p in open_paths],
            headers=ADMIN_AUTH,
        ),
        Scenario(
            "create",
            "POST",
            ["/api/v1/issues"],
            bodies=create_bodies(256),
            headers={**AUTH, "Content-Type": "application/json"},
        ),
    ]
    say(
        f"driving both servers in turn: {args.connections} connections, {args.warmup:g}s "
        f"unmeasured + {args.duration:g}s measured per scenario (bare around each read)"
    )
    say(
        f"  (list-open: ?status=open&limit={PAGE}&offset=random of {open_total}; "
        f"list-bug: ?stage=active&category=bug&limit={PAGE}&offset=random of {bug_total})"
    )
    # The bare handler on either side of each read whose target is a ratio to it (see
    # TO_BARE): this machine's speed drifts within minutes.
    bare_paths = [f"/bare/{i}" for i in ids]
    bare_runs = [Scenario(name, "GET", bare_paths, headers=AUTH) for name in BARE_RUNS]
    by_name = {s.name: s for s in scenarios}
    reads: list[tuple[tuple[subprocess.Popen[bytes], int], Scenario]] = []
    for before, name in zip(bare_runs, TO_BARE, strict=False):
        reads += [(bare, before), (server, by_name[name])]
    reads.append((bare, bare_runs[-1]))
    reads += [(server, s) for s in scenarios if s.method == "GET" and s.name not in TO_BARE]
    writes = [(server, s) for s in scenarios if s.method != "GET"]
    # Reads first, every round; creates last, since they add issues (and open ones).
    for group in (reads, writes):
        if group is writes:
            # The memory target is for the seeded issues: read it before creates add more.
            report.rss_mb = kib_to_mb(proc_status(proc.pid)["VmRSS"])
            report.rss_issues = live_count(port)
            say(
                f"  server VmRSS after the read load: {report.rss_mb:.0f} MB "
                f"({report.rss_issues} live issues)"
            )
            insight_latency(port, report)
            memory_phase(driver, (proc, port), writes[0][1], report)
        for round_no in range(1, args.rounds + 1):
            if args.rounds > 1:
                say(f"  round {round_no} of {args.rounds}")
            for (target, target_port), scenario in group:
                keep_best(
                    report,
                    measure(driver, target_port, target.pid, scenario, args.duration, args.warmup),
                )
    # The same creates with 50 SSE clients connected and reading every event.
    create = next(s for s in scenarios if s.name == "create")
    with_sse = Scenario("create-sse", create.method, create.paths, create.bodies, create.headers)
    say(f"  with {SSE_CLIENTS} SSE clients connected to /api/v1/events:")
    for round_no in range(1, args.rounds + 1):
        if args.rounds > 1:
            say(f"  round {round_no} of {args.rounds}")
        clients = SseClients(procs, workdir, port, parse=False)
        try:
            keep_best(report, measure(driver, port, proc.pid, with_sse, args.duration, args.warmup))
        finally:
            clients.stop()
    sse_latency(procs, workdir, port, min(args.duration, 5.0), report)
    hook_reads = [s for s in scenarios if s.name in ("get", "list-open")]
    webhook_phase(driver, server, args, report, procs, workdir, create, hook_reads)
    status = proc_status(proc.pid)
    report.rss_after_creates_mb = kib_to_mb(status["VmRSS"])
    report.hwm_mb = kib_to_mb(status["VmHWM"])
    report.issues_after_creates = live_count(port)
    say(
        f"  server VmRSS after the creates: {report.rss_after_creates_mb:.0f} MB "
        f"({report.issues_after_creates} live issues), peak {report.hwm_mb:.0f} MB"
    )
    # What one more stored issue costs (the memory phase), beside the JSON of such an
    # issue (the newest 100, as the API sends them).
    newest = json.loads(http_get(port, "/api/v1/issues?sort=-created&limit=100", AUTH)[2])
    compact = [json.dumps(i, separators=(",", ":"), ensure_ascii=False) for i in newest]
    report.created_json_bytes = sum(len(text.encode()) for text in compact) / len(newest)
    assert report.growth_from is not None and report.growth_to is not None
    added = report.growth_to[1] - report.growth_from[1]
    grown = (report.growth_to[0] - report.growth_from[0]) * 1024 * 1024
    report.bytes_per_created = grown / added if added > 0 else 0.0
    say(
        f"  memory per created issue: {report.bytes_per_created / 1024:.2f} KB beside "
        f"{report.created_json_bytes / 1024:.2f} KB of its JSON ({added} issues added from "
        f"{report.growth_from[0]:.0f} to {report.growth_to[0]:.0f} MB)"
    )


MEMORY_FILL = 12_000  # creates before the memory phase measures: more than the newest
# 8,192 events and the 4,096 hot issues the server keeps whatever the number of issues
MEMORY_GROWTH = 10_000  # creates the memory phase measures the growth over


def memory_phase(
    driver: Driver, server: tuple[subprocess.Popen[bytes], int], create: Scenario, report: Report
) -> None:
    """Memory per stored issue: VmRSS before and after MEMORY_GROWTH more creates, once the
    bounded working sets are full (what they hold does not grow with the issues), and
    with nothing else connected (SSE clients' and webhooks' buffers are not issues).
    Both readings are taken once the background work has caught up, so issue files
    still being written are not counted."""
    proc, port = server
    say("  memory per stored issue: creates until the bounded working sets are full, then")
    say(f"  VmRSS before and after {MEMORY_GROWTH} or more (the creates below run after it)")
    start = live_count(port)
    create_until(driver, port, create, start + MEMORY_FILL)
    background_idle(port)
    report.growth_from = (kib_to_mb(proc_status(proc.pid)["VmRSS"]), live_count(port))
    create_until(driver, port, create, report.growth_from[1] + MEMORY_GROWTH)
    # Also so that the creates measured next do not pay for this phase's background work.
    waited = background_idle(port)
    report.growth_to = (kib_to_mb(proc_status(proc.pid)["VmRSS"]), live_count(port))
    say(f"  background work caught up {waited:.1f}s after the memory phase")


def create_until(driver: Driver, port: int, create: Scenario, live: int) -> None:
    """Creates, in bursts of 2 s, until the server holds ``live`` issues."""
    while live_count(port) < live:
        driver.run(port, create, 2.0)


def background_idle(port: int, timeout: float = 120.0) -> float:
    """Seconds until every background subscriber has handled every commit (health's
    ``extra.subscribers`` lags all 0)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, _, body = http_get(port, "/api/v1/health", timeout=5)
        subscribers = json.loads(body)["extra"]["subscribers"] if status == 200 else None
        if subscribers is not None and all(s["lag"] == 0 for s in subscribers.values()):
            break
        time.sleep(0.1)
    return time.monotonic() - started


def start_bare(
    procs: Processes, workdir: Path, body: bytes, report: Report
) -> tuple[subprocess.Popen[bytes], int]:
    body_file = workdir / "bare-body.json"
    body_file.write_bytes(body)
    report.bare_body_bytes = len(body)
    proc, port = start_helper(
        procs, workdir, "bare", ["--body-file", str(body_file), "--serve-bare"]
    )
    say(f"started the bare aiohttp server (fixed {len(body)}-byte issue JSON) beside it")
    return proc, port


# -- the verdict -----------------------------------------------------------------------


def verdict(report: Report) -> list[tuple[str, str, str, bool]]:
    loads = report.loads
    rows: list[tuple[str, str, str, bool]] = []
    ratio = loads["get"].rate / bare_reference(loads, "get")
    rows.append(("get-by-id / bare", f"{ratio:.2f}x", ">= 0.6x", ratio >= TARGETS["get_ratio"]))
    for name in ("list-open", "list-bug"):
        ratio = loads[name].rate / bare_reference(loads, name)
        rows.append(
            (
                f"{name} (50 issues) / bare",
                f"{ratio:.2f}x",
                ">= 0.3x",
                ratio >= TARGETS["list_ratio"],
            )
        )
    ratio = loads["admin-list"].rate / loads["list-open"].rate
    rows.append(
        (
            "admin list page (HTML) / list-open (JSON)",
            f"{ratio:.2f}x",
            ">= 0.5x",
            ratio >= TARGETS["admin_list_ratio"],
        )
    )
    ratio = loads["create"].rate / loads["raw-fsync"].rate
    rows.append(
        ("create / raw append+fsync", f"{ratio:.2f}x", ">= 0.3x", ratio >= TARGETS["create_ratio"])
    )
    ratio = loads["create-sse"].rate / loads["create"].rate
    rows.append(
        (
            f"create with {SSE_CLIENTS} SSE clients / create",
            f"{ratio:.2f}x",
            ">= 0.8x",
            ratio >= TARGETS["create_sse_ratio"],
        )
    )
    rows.append(
        (
            f"SSE 2xx -> event at {SSE_CLIENTS} clients, p99",
            f"{report.sse_p99_ms:.1f} ms",
            "< 50 ms",
            report.sse_p99_ms < TARGETS["sse_p99_ms"] and report.sse_missing == 0,
        )
    )
    ratio = loads["create-hooks"].rate / loads["create-paired"].rate
    rows.append(
        (
            "create with 3 webhooks / create beside it",
            f"{ratio:.2f}x",
            ">= 0.8x",
            ratio >= TARGETS["create_hooks_ratio"],
        )
    )
    for name, label in (("get", "get-by-id"), ("list-open", "list-open")):
        ratio = loads[f"{name}-hooks"].rate / loads[f"{name}-paired"].rate
        rows.append(
            (
                f"{label} with 3 webhooks / beside it",
                f"{ratio:.2f}x",
                ">= 0.9x",
                ratio >= TARGETS["reads_hooks_ratio"],
            )
        )
    rows.append(
        (
            "webhook 2xx -> delivery (healthy), p99",
            f"{report.hook_p99_ms:.1f} ms",
            "< 100 ms",
            report.hook_p99_ms < TARGETS["hook_p99_ms"] and report.hook_missing == 0,
        )
    )
    rows.append(
        (
            "GET /api/v1/stats, p99",
            f"{report.stats_p99_ms:.2f} ms",
            "< 5 ms",
            report.stats_p99_ms < TARGETS["stats_p99_ms"],
        )
    )
    rows.append(
        (
            "GET /admin/stats (charts), p99",
            f"{report.admin_stats_p99_ms:.1f} ms",
            "< 50 ms",
            report.admin_stats_p99_ms < TARGETS["admin_stats_p99_ms"],
        )
    )
    slowest = max(report.quality_ms, default=0.0)
    rows.append(
        (
            "quality report, last 30 days, slowest of 5",
            f"{slowest:.0f} ms",
            "< 500 ms",
            slowest < TARGETS["quality_ms"],
        )
    )
    startup_goal, rss_goal = size_targets(report.issues)
    rows.append(
        (
            "start-up, current index",
            f"{report.startup_s:.2f} s",
            f"< {startup_goal:g} s",
            report.startup_s < startup_goal and report.index_current,
        )
    )
    rows.append(
        ("full replay", f"{report.replay_s:.2f} s", "< 30 s", report.replay_s < TARGETS["replay_s"])
    )
    if report.created_json_bytes:
        ratio = report.bytes_per_created / report.created_json_bytes
        rows.append(
            (
                "memory per created issue / its JSON",
                f"{ratio:.2f}x",
                "<= 2x",
                ratio <= TARGETS["memory_per_issue_ratio"],
            )
        )
    rows.append(
        (
            f"resident memory after reads, {report.rss_issues} issues",
            f"{report.rss_mb:.0f} MB",
            f"< {rss_goal:g} MB",
            report.rss_mb < rss_goal,
        )
    )
    base = report.baseline
    if base is not None:
        base_create = base["loads"]["create"]
        rate = base_create["requests"] / base_create["seconds"]
        ratio = loads["create"].rate / rate
        rows.append(
            (
                f"create here / create at {base['issues']} issues",
                f"{ratio:.2f}x",
                ">= 0.8x",
                ratio >= TARGETS["flat_create_ratio"],
            )
        )
        rows.append(
            (
                "create p99 at this size",
                f"{loads['create'].p99_ms:.0f} ms",
                "< 100 ms",
                loads["create"].p99_ms < TARGETS["flat_create_p99_ms"],
            )
        )
    return rows


def print_table(report: Report, args: argparse.Namespace) -> bool:
    loads = report.loads
    say("")
    say("=" * 104)
    say(
        f"HydraIssue benchmark: {report.issues} issues / {report.events} events in the data dir "
        f"at replay; {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    say(f"load generator: {report.generator}")
    say(
        f"{args.connections} concurrent connections on loopback, {args.duration:g}s measured per "
        f"scenario after {args.warmup:g}s unmeasured, best of {args.rounds} round(s); reads "
        "measured after the server's warm-up"
    )
    say("-" * 104)
    say(
        f"{'scenario':<52}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'CPU srv/client/other':>22}"
    )
    labels = {
        "bare": f"bare aiohttp GET ({report.bare_body_bytes} B fixed JSON), before get",
        "bare-2": "the same bare GET, between get and list-open",
        "bare-3": "the same bare GET, between list-open and list-bug",
        "bare-4": "the same bare GET, after list-bug",
        "get": "GET /api/v1/issues/{random id}",
        "list-open": f"GET ?status=open&limit={PAGE}&offset=rnd",
        "list-bug": f"GET ?stage=active&category=bug&limit={PAGE}&offset=rnd",
        "admin-list": f"GET /admin?status=open&limit={PAGE}&offset=rnd (HTML)",
        "create": "POST /api/v1/issues (durable create)",
        "create-sse": f"the same, {SSE_CLIENTS} SSE clients reading the feed",
        "create-paired": "the same, webhooks switched off (beside the next)",
        "create-hooks": "the same, 3 webhooks (answering, hanging, refusing)",
        "get-hooks": "GET /api/v1/issues/{id}, deliveries flowing",
        "list-open-hooks": f"GET ?status=open&limit={PAGE}, deliveries flowing",
        "get-paired": "GET /api/v1/issues/{id}, webhooks switched off",
        "list-open-paired": f"GET ?status=open&limit={PAGE}, webhooks switched off",
        "raw-create": "raw new file: create+write+fsync+dir fsync, one loop (info)",
        "raw-fsync": f"raw append {RAW_RECORD} B + fsync, one loop (baseline)",
        "raw-fsync-n": f"raw append {RAW_RECORD} B + fsync, {args.connections} threads (info)",
    }
    names = (
        "bare",
        "get",
        "bare-2",
        "list-open",
        "bare-3",
        "list-bug",
        "bare-4",
        "admin-list",
        "create",
        "create-sse",
        "create-paired",
        "create-hooks",
        "get-hooks",
        "list-open-hooks",
        "get-paired",
        "list-open-paired",
        "raw-fsync",
    )
    for name in (*names, "raw-fsync-n", "raw-create"):
        load = loads[name]
        cpu = "-"
        if load.server_cpu is not None:
            cpu = f"{load.server_cpu:.0%} / {load.client_cpu or 0:.0%} / {load.other_cpu or 0:.0%}"
        say(
            f"{labels[name]:<52}{load.rate:>8.0f}{load.p50_ms:>8.2f}{load.p99_ms:>8.2f}"
            f"{load.errors:>7}{cpu:>22}"
        )
    say("-" * 104)
    say(f"{'target':<52}{'measured':>14}{'goal':>12}{'result':>10}")
    ok = True
    for label, measured, goal, passed in verdict(report):
        ok = ok and passed
        say(f"{label:<52}{measured:>14}{goal:>12}{'PASS' if passed else 'FAIL':>10}")
    say("-" * 104)
    say(
        f"SSE fan-out: 2xx -> event p50 {report.sse_p50_ms:.2f} ms, p99 "
        f"{report.sse_p99_ms:.2f} ms; request sent -> event p99 "
        f"{report.sse_from_send_p99_ms:.2f} ms; over {report.sse_samples} (event, client) "
        f"pairs; {report.sse_missing} never arrived"
    )
    say(
        f"webhooks: 2xx -> delivery at the healthy receiver p50 {report.hook_p50_ms:.2f} ms, "
        f"p99 {report.hook_p99_ms:.2f} ms over {report.hook_samples} paced creates; "
        f"{report.hook_missing} missing; after the create load it caught up in "
        f"{report.hook_backlog_s:.1f}s"
    )
    say(
        f"stats p50 {report.stats_p50_ms:.2f} ms; quality report (last 30 days: "
        f"{report.quality_line}) " + ", ".join(f"{ms:.0f}" for ms in report.quality_ms) + " ms"
    )
    say(f"replay: {report.replay_line}")
    say(f"start-up: {report.startup_log.split(': ', 1)[-1]}")
    say(f"warm-up: {report.warm_log.split(': ', 1)[-1] or '-'} (background, not measured)")
    say(
        f"server memory: VmRSS {report.rss_mb:.0f} MB after the read load with "
        f"{report.rss_issues} issues (the target); {report.rss_after_creates_mb:.0f} MB after "
        f"the creates with {report.issues_after_creates} issues; VmHWM {report.hwm_mb:.0f} MB"
    )
    say(
        "CPU columns: cores used during the measured window by the server (with its webhook "
        "helper), the load generator and everything else on the machine (2 cores = 200%)."
    )
    noisy = [n for n, load in loads.items() if (load.other_cpu or 0) > NOISY_OTHER_CPU]
    if noisy:
        say(
            f"WARNING: other processes used more than {NOISY_OTHER_CPU:.0%} of a core during "
            f"{', '.join(noisy)}: those figures are low; rerun on a quiet machine "
            "(or with --rounds 3)."
        )
    say(f"overall: {'PASS' if ok else 'FAIL'}")
    say("=" * 104)
    return ok


def run(args: argparse.Namespace) -> int:
    report = Report()
    if args.baseline_json:
        report.baseline = json.loads(args.baseline_json.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="hydraissue-bench-"))
    procs = Processes()
    wrk = None if args.client == "aiohttp" else shutil.which("wrk")
    if args.client == "wrk" and wrk is None:
        raise SystemExit("bench: --client wrk but wrk is not on PATH (apt-get install wrk)")
    driver: Driver = (
        WrkDriver(wrk, workdir, args.connections, args.wrk_threads)
        if wrk
        else AiohttpDriver(args.connections)
    )
    report.generator = driver.describe()
    say(f"bench work dir: {workdir}")
    say(f"load generator: {report.generator}")
    try:
        data_dir = seeded_dir(args, workdir, report)
        config = workdir / "config.yaml"
        config.write_text(
            f"api_token: {API_TOKEN}\nadmin_token: {ADMIN_TOKEN}\nlog_level: info\n"
            "webhooks:\n  allow_private_targets: true  # the receivers are on loopback\n"
        )
        env = dict(os.environ, HYDRAISSUE_API_TOKEN=API_TOKEN, HYDRAISSUE_ADMIN_TOKEN=ADMIN_TOKEN)
        run_replay(data_dir, config, env, report)
        server_log = workdir / "server.log"
        proc, port = start_server(procs, data_dir, config, env, server_log, report)
        try:
            ids = warm_up(proc, port, server_log, report)
            bare = start_bare(procs, workdir, bare_body(port, ids), report)
            drive(driver, (proc, port), bare, ids, args, report, procs, workdir)
        finally:
            stopping = time.monotonic()
            code = procs.stop(proc, timeout=120.0)  # SIGTERM: it flushes its projections
            say(
                f"  hydraissue stopped in {time.monotonic() - stopping:.1f}s after SIGTERM "
                f"(exit code {code})"
            )
            procs.stop_all()
        say(f"raw disk baselines: append {RAW_RECORD} B + fsync in {data_dir} ...")
        for _ in range(args.rounds):
            raw_dir = data_dir / ".bench-raw"
            keep_best(report, raw_append_fsync(raw_dir, 1, args.duration, "raw-fsync"))
            keep_best(
                report,
                raw_append_fsync(raw_dir, args.connections, args.duration, "raw-fsync-n"),
            )
            keep_best(report, raw_create_fsync(raw_dir, args.duration, "raw-create"))
        ok = print_table(report, args)
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
        return 0 if ok else 1
    finally:
        procs.stop_all()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="HydraIssue performance targets, measured against a bare aiohttp handler "
        "and raw append+fsync in one run."
    )
    parser.add_argument("--issues", type=int, default=10_000, help="issues to seed (10000)")
    parser.add_argument(
        "--duration", type=float, default=8.0, help="measured seconds per scenario (8)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each scenario (1)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="use (and keep) this data dir; seeded first when it holds no events "
        "(the create scenario adds issues to it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp work dir")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every scenario this many times and keep the fastest (1)",
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator: wrk when on PATH (auto), or force one",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--baseline-json",
        type=Path,
        help="a --json report of a run at another size: adds the 'flat as the store grows' "
        "rows (creates >= 0.8x of that run's, p99 < 100 ms)",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-receivers", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--sse-clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sse-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sse-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sse-parse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--body-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.connections < 1 or args.duration <= 0 or args.issues < 1:
        parser.error("--rounds, --connections, --duration and --issues must be positive")
    if args.serve_bare is not None:
        serve_bare(args.serve_bare, args.body_file)
        return 0
    if args.serve_receivers is not None:
        serve_receivers(args.serve_receivers)
        return 0
    if args.sse_clients is not None:
        serve_sse_clients(args.sse_port, args.sse_clients, args.sse_out, args.sse_parse)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
