"""``python -m timely bench``: how fast and how cheap timely is.

Every figure is measured against a Redis server (a private ``redis-server``
started on a free port unless ``--redis-url`` names one) and set against a
baseline measured in the same run, on the same server: ``redis-benchmark``
on one connection, for PING (latency) and for EVALSHA of a two-command
script (requests per second). Ratios to that baseline compare across
machines; the absolute figures do not.

The suite prints figures and never fails on a slow machine. The goals it
shows are those of the project, for reading the table, not assertions.

The hand-off and the resource figures run part of their work in child
processes (``python -c``); the children speak to the parent through lines
on their stdin and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import RedisSemaphore, RedisTokenBucket, _validate

BASELINE_SCRIPT = (
    "local n = redis.call('INCR', KEYS[1]) "
    "redis.call('PEXPIRE', KEYS[1], 60000) "
    "return n"
)
"""The small script of the EVALSHA baseline: a counter with a TTL."""

BASELINE_KEY = "timely:bench:baseline"

BASELINE_NAMES = {"evalsha_per_s": "EVALSHA", "ping_p50_us": "PING"}
"""The baseline figures that ratios divide by, as the table names them."""

CHILD_MAIN = (
    "import sys; from timely._bench import child; sys.exit(child(sys.argv[1:]))"
)
"""What a child process runs, given its role and arguments."""

CHILD_TIMEOUT = 120.0
"""Seconds a child process has for each step before the bench gives up."""


@dataclass(frozen=True)
class Scale:
    """How much work each figure does; ``--quick`` shrinks times, not loads."""

    baseline_requests: int
    throughput_s: float
    warmup_s: float
    cycles: int
    handoffs: int
    tokens: int
    waiters: int = 10_000
    semaphore_tasks: int = 2_000
    bucket_tasks: int = 5_000


FULL = Scale(
    baseline_requests=20_000,
    throughput_s=5.0,
    warmup_s=1.0,
    cycles=3_000,
    handoffs=400,
    tokens=150,
)
QUICK = Scale(
    baseline_requests=2_000,
    throughput_s=0.5,
    warmup_s=0.2,
    cycles=200,
    handoffs=30,
    tokens=15,
)


# --- Redis: a private server and a bare connection ------------------------


class RedisReplyError(Exception):
    """The server answered a command with an error reply."""


class Resp:
    """One plain RESP2 connection, for the few commands the bench sends
    itself (SCRIPT LOAD, CLIENT LIST, TIME, HGET): timely has no Python
    Redis client, and the bench needs none."""

    __slots__ = ("sock", "stream")

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        if target.socket:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(target.socket)
        else:
            self.sock = socket.create_connection((target.host, target.port), timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")
        if target.password is not None:
            auth = [target.username] if target.username else []
            self.command("AUTH", *auth, target.password)
        if target.db:
            self.command("SELECT", target.db)

    def command(self, *args: str | int) -> Any:
        """Send one command and return its decoded reply."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.stream.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("the Redis server closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise RedisReplyError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            return None if size < 0 else self.stream.read(size + 2)[:-2].decode()
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise ConnectionError(f"unexpected reply from the Redis server: {line!r}")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@dataclass(frozen=True)
class Target:
    """Where the Redis server is, in the terms redis-benchmark takes."""

    url: str
    host: str = ""
    port: int = 0
    socket: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Target:
        """Read a ``redis://`` or ``unix://`` URL; the baseline needs one
        server it can reach with redis-benchmark, so other forms are refused."""
        url = _validate.redis_url(url)
        parts = urlsplit(url)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if parts.scheme == "redis":
            db = parts.path.strip("/")
            return cls(
                url,
                host=parts.hostname or "",
                port=parts.port or 6379,
                db=int(db or 0),
                username=user,
                password=password,
            )
        if parts.scheme == "unix":
            query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
            return cls(url, socket=parts.path, db=int(query.get("db", 0)))
        raise ValueError(
            f"--redis-url {_validate.redact(url)!r}: the bench needs a redis:// or "
            "unix:// URL of one server, which redis-benchmark can measure too"
        )

    def benchmark_args(self) -> list[str]:
        """The connection options of redis-benchmark for this server."""
        args = ["-s", self.socket] if self.socket else ["-h", self.host]
        if not self.socket:
            args += ["-p", str(self.port)]
        if self.password is not None:
            args += ["-a", self.password]
            if self.username:
                args += ["--user", self.username]
        if self.db:
            args += ["--dbnum", str(self.db)]
        return args


def find_program(name: str) -> str:
    """Find a Redis program: beside ``$TIMELY_REDIS_SERVER``, else on PATH."""
    server = os.environ.get("TIMELY_REDIS_SERVER")
    if server:
        beside = Path(server).with_name(name)
        if name == "redis-server" or beside.is_file():
            path = server if name == "redis-server" else str(beside)
            if os.access(path, os.X_OK):
                return path
    found = shutil.which(name)
    if found is None:
        raise SystemExit(
            f"timely bench: {name} not found on PATH (nor beside "
            f"$TIMELY_REDIS_SERVER={server!r}); install redis-server and "
            "redis-tools (`make deps`)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def private_server() -> Iterator[str]:
    """Run a redis-server on a free loopback port, without persistence, for
    the duration of the block; yield its URL."""
    binary = find_program("redis-server")
    with tempfile.TemporaryDirectory(prefix="timely-bench-") as workdir:
        for _ in range(5):
            port = free_port()
            proc = subprocess.Popen(
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", workdir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"redis://127.0.0.1:{port}"
            if _wait_until_up(proc, Target.parse(url)):
                break
            _stop(proc)
        else:
            raise SystemExit(f"timely bench: {binary} did not start")
        try:
            yield url
        finally:
            _stop(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], target: Target) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = Resp(target, timeout=1)
            try:
                if conn.command("PING") == "PONG":
                    return True
            finally:
                conn.close()
        except (OSError, RedisReplyError):
            time.sleep(0.02)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- Figures ---------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, with its ratio to the run's baseline.

    ``per`` names the baseline figure the ratio divides by (None for the
    resource counts, which no Redis baseline scales); ``goal`` is the
    project's goal, on the ratio when ``per`` is set and ``goal_on_value``
    is false, otherwise on the value.
    """

    name: str
    value: float
    unit: str
    what: str
    per: str | None = None
    ratio: float | None = None
    goal: str = ""
    goal_on_value: bool = False
    met: bool | None = None


@dataclass
class Report:
    machine: dict[str, Any]
    baseline: dict[str, float] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, fig: Figure) -> None:
        if fig.per is not None:
            fig.ratio = fig.value / self.baseline[fig.per]
        if fig.goal:
            op, bound = fig.goal.split()
            x = fig.value if fig.goal_on_value or fig.ratio is None else fig.ratio
            fig.met = x >= float(bound) if op == ">=" else x <= float(bound)
        self.figures.append(fig)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "baseline": self.baseline,
            "figures": {f.name: asdict(f) for f in self.figures},
        }


def percentile(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of xs, nearest rank."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
    }


def redis_benchmark(target: Target, n: int, command: Sequence[str]) -> dict[str, str]:
    """Run redis-benchmark on one connection; return its CSV row."""
    cmd = [
        find_program("redis-benchmark"),
        *target.benchmark_args(),
        *("-c", "1", "-n", str(n), "--csv"),
        *command,
    ]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"timely bench: redis-benchmark failed: {out.stderr.strip()}")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if not rows:
        raise SystemExit(
            f"timely bench: no figures from redis-benchmark: {out.stdout!r}"
        )
    return rows[-1]  # for -t ping: PING_MBULK, the form clients send


def measure_baseline(target: Target, conn: Resp, scale: Scale) -> dict[str, float]:
    """PING latency and EVALSHA throughput on one connection."""
    ping = redis_benchmark(target, scale.baseline_requests, ["-t", "ping"])
    sha = conn.command("SCRIPT", "LOAD", BASELINE_SCRIPT)
    evalsha = redis_benchmark(
        target, scale.baseline_requests, ["evalsha", sha, "1", BASELINE_KEY]
    )
    return {
        "ping_p50_us": float(ping["p50_latency_ms"]) * 1000,
        "ping_per_s": float(ping["rps"]),
        "evalsha_per_s": float(evalsha["rps"]),
        "evalsha_p50_us": float(evalsha["p50_latency_ms"]) * 1000,
    }


def unique(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:12]}"


async def cycles_per_second(
    enter: Callable[[], Any], tasks: int, warmup: float, seconds: float
) -> float:
    """Run ``tasks`` tasks that enter and leave a limiter in a loop, with
    nothing in between; count completions over ``seconds`` after ``warmup``."""
    done = 0
    stop = False

    async def worker() -> None:
        nonlocal done
        while not stop:
            async with enter():
                pass
            done += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(tasks)]
    await asyncio.sleep(warmup)
    start, first = time.monotonic(), done
    await asyncio.sleep(seconds)
    rate = (done - first) / (time.monotonic() - start)
    stop = True
    await asyncio.gather(*workers)
    return rate


async def semaphore_throughput(url: str, scale: Scale) -> float:
    sem = RedisSemaphore(name=unique("sem"), capacity=50, redis_url=url)
    try:
        return await cycles_per_second(
            lambda: sem, scale.semaphore_tasks, scale.warmup_s, scale.throughput_s
        )
    finally:
        sem.close()


async def bucket_throughput(url: str, scale: Scale) -> float:
    # A billion tokens, all back every second: it never makes anyone wait.
    bucket = RedisTokenBucket(
        name=unique("bucket"),
        capacity=10**9,
        refill_amount=10**9,
        refill_frequency=1,
        redis_url=url,
    )
    try:
        return await cycles_per_second(
            lambda: bucket, scale.bucket_tasks, scale.warmup_s, scale.throughput_s
        )
    finally:
        bucket.close()


async def sequential_latency(url: str, scale: Scale) -> list[float]:
    """Microseconds of each ``async with`` cycle of one task, uncontended."""
    sem = RedisSemaphore(name=unique("seq"), capacity=1, redis_url=url)
    samples = []
    try:
        for i in range(scale.cycles + 50):
            start = time.perf_counter()
            async with sem:
                pass
            if i >= 50:  # the first cycles connect and subscribe
                samples.append((time.perf_counter() - start) * 1e6)
    finally:
        sem.close()
    return samples


async def wakeup_lateness(url: str, conn: Resp, scale: Scale) -> list[float]:
    """Microseconds by which each admission follows its token's due time.

    One task takes tokens from a bucket of one token refilled every 20 ms,
    so each admission waits for the next refill. Refills happen on the Redis
    clock at slot + k * 20 ms, slot being read from the bucket; each
    admission is mapped from this process's monotonic clock to the Redis
    clock, and its lateness is its distance past the refill before it.
    """
    period_us = 20_000
    name = unique("wake")
    bucket = RedisTokenBucket(
        name=name, capacity=1, refill_amount=1, refill_frequency=0.02, redis_url=url
    )
    admitted = []
    try:
        for _ in range(scale.tokens + 2):
            async with bucket:
                admitted.append(time.monotonic())
    finally:
        bucket.close()
    slot = conn.command("HGET", f"timely:{{bucket:{name}}}", "slot")
    offset = redis_clock_offset(conn)
    lateness = []
    for t in admitted[2:]:  # the first is the full bucket's, at once
        r = t * 1e6 + offset
        lateness.append((r - float(slot)) % period_us)
    return lateness


def redis_clock_offset(conn: Resp, tries: int = 50) -> float:
    """Redis TIME minus time.monotonic(), in us, from the quickest of a few
    TIME round trips (its error is at most half that round trip)."""
    best = (float("inf"), 0.0)
    for _ in range(tries):
        t0 = time.monotonic()
        sec, usec = conn.command("TIME")
        t1 = time.monotonic()
        mid = (t0 + t1) / 2 * 1e6
        best = min(best, (t1 - t0, int(sec) * 1e6 + int(usec) - mid))
    return best[1]


# --- Child processes: the hand-off partner and the 10,000 waiters ---------


class Child:
    """A ``python -c`` child running :func:`child` with a role; lines go
    both ways, each read with a timeout so that a stuck child cannot hang
    the bench."""

    def __init__(self, role: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD_MAIN,
                role,
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    def read(self) -> str:
        try:
            line = self.lines.get(timeout=CHILD_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line:
            self.proc.kill()
            raise SystemExit("timely bench: a child process stopped answering")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def ping_pong(
    url: str, name: str, rounds: int, ready: Callable[[], Any]
) -> list[tuple[float, float]]:
    """Take and give back the one permit of ``name`` ``rounds`` times,
    holding it 5 ms; return the (grant, release) monotonic times. Two
    processes doing this hand the permit to each other, FIFO."""
    sem = RedisSemaphore(name=name, capacity=1, redis_url=url)
    events = []
    try:
        async with sem:  # connects and subscribes before the game starts
            pass
        await ready()
        for _ in range(rounds):
            async with sem:
                granted = time.monotonic()
                await asyncio.sleep(0.005)
                events.append((granted, time.monotonic()))
    finally:
        sem.close()
    return events


async def handoff_latency(url: str, scale: Scale) -> list[float]:
    """Microseconds from a release in one process to the grant it causes
    in another (a child started with ``python -c``).

    Both processes hold a capacity-1 semaphore in turn: each, once it has
    released, queues again behind the other, so every grant answers the
    other process's release. The times are ``time.monotonic()``, one clock
    for every process of the machine.
    """
    name = unique("handoff")
    partner = Child("pingpong", url, name, str(scale.handoffs))
    try:
        if partner.read() != "ready":
            raise SystemExit("timely bench: the hand-off partner did not start")

        async def go() -> None:
            partner.send("go")

        ours = await ping_pong(url, name, scale.handoffs, go)
        theirs = json.loads(partner.read())
    finally:
        partner.close()

    timeline = sorted(
        [(g, "grant", 0) for g, _ in ours]
        + [(r, "release", 0) for _, r in ours]
        + [(g, "grant", 1) for g, _ in theirs]
        + [(r, "release", 1) for _, r in theirs]
    )
    samples, last = [], None
    for t, kind, who in timeline:
        if kind == "release":
            last = (t, who)
        elif last is not None and last[1] != who:
            samples.append((t - last[0]) * 1e6)
            last = None
    return samples


def resources(url: str, conn: Resp, scale: Scale) -> dict[str, float]:
    """Connections, threads and RSS growth of one process (a child) while
    10,000 tasks wait on one semaphore whose one permit another task holds.
    Connections are counted by the server: CLIENT LIST while they wait,
    less the count before the child started."""
    before = clients(conn)
    waiters = Child("waiters", url, unique("waiters"), str(scale.waiters))
    try:
        line = waiters.read()
        if not line.startswith("{"):
            raise SystemExit(f"timely bench: the waiters' child said {line!r}")
        during = clients(conn)
        waiters.send("done")
        usage: dict[str, float] = json.loads(line)
        if waiters.read() != "closed":
            raise SystemExit("timely bench: the waiters' child did not close")
    finally:
        waiters.close()
    usage["connections"] = during - before
    return usage


def clients(conn: Resp) -> int:
    """Connections the server has now, less this one."""
    listing: str = conn.command("CLIENT", "LIST")
    return len([line for line in listing.splitlines() if line.strip()]) - 1


def proc_status(key: str) -> int:
    """A number from /proc/self/status: Threads, or VmRSS in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


async def hold_waiters(url: str, name: str, n: int) -> dict[str, float]:
    """Hold the one permit of ``name`` and queue n waiters behind it; report
    threads and RSS growth once Redis shows them all queued."""
    sem = RedisSemaphore(name=name, capacity=1, redis_url=url)
    async with sem:  # load the core, connect and subscribe first
        pass
    rss_before = proc_status("VmRSS")
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with sem:
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with sem:
            pass

    tasks = [asyncio.ensure_future(holder())]
    await held.wait()
    tasks += [asyncio.ensure_future(waiter()) for _ in range(n)]
    while (await sem.astate()).waiters < n:
        await asyncio.sleep(0.05)
    usage = {
        "threads": proc_status("Threads"),
        "rss_growth_mib": (proc_status("VmRSS") - rss_before) / 1024,
    }
    print(json.dumps(usage), flush=True)
    await _stdin_line()
    sem.close()  # the waiters fail with LimiterClosedError
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return usage


def child(argv: list[str]) -> int:
    """Entry point of the bench's child processes (``role args...``)."""
    role, url, name, count = argv
    if role == "pingpong":

        async def ready() -> None:
            print("ready", flush=True)
            await _stdin_line()

        events = asyncio.run(ping_pong(url, name, int(count), ready))
        print(json.dumps(events), flush=True)
    elif role == "waiters":
        asyncio.run(hold_waiters(url, name, int(count)))
        print("closed", flush=True)
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


# --- The run, the table, the plot ------------------------------------------


async def run_figures(url: str, conn: Resp, scale: Scale, report: Report) -> None:
    def step(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    step(f"semaphore cycles, {scale.semaphore_tasks} tasks, capacity 50")
    report.add(
        Figure(
            "semaphore_cycles_per_s",
            await semaphore_throughput(url, scale),
            "1/s",
            f"semaphore acquire+release cycles per second, {scale.semaphore_tasks} "
            "tasks, capacity 50, zero hold",
            per="evalsha_per_s",
            goal=">= 1.5",
        )
    )
    step(f"token bucket admissions, {scale.bucket_tasks} tasks")
    report.add(
        Figure(
            "bucket_admissions_per_s",
            await bucket_throughput(url, scale),
            "1/s",
            f"token bucket admissions per second, {scale.bucket_tasks} tasks, "
            "never throttled",
            per="evalsha_per_s",
            goal=">= 3",
        )
    )

    step(f"sequential cycles, {scale.cycles}")
    seq = await sequential_latency(url, scale)
    report.samples["sequential_us"] = seq
    what = "sequential semaphore acquire+release, one task"
    report.add(
        Figure(
            "sequential_p50_us",
            percentile(seq, 50),
            "us",
            what + ", p50",
            per="ping_p50_us",
            goal="<= 3",
        )
    )
    report.add(
        Figure(
            "sequential_p99_us",
            percentile(seq, 99),
            "us",
            what + ", p99",
            per="ping_p50_us",
        )
    )

    step(f"cross-process hand-offs, {2 * scale.handoffs} grants")
    hand = await handoff_latency(url, scale)
    report.samples["handoff_us"] = hand
    what = "hand-off from a release in one process to the grant in another"
    report.add(
        Figure(
            "handoff_p50_us",
            percentile(hand, 50),
            "us",
            what + ", p50",
            per="ping_p50_us",
        )
    )
    report.add(
        Figure(
            "handoff_p99_us",
            percentile(hand, 99),
            "us",
            what + ", p99",
            per="ping_p50_us",
            goal="<= 2000",
            goal_on_value=True,
        )
    )

    step(f"token wake-ups, {scale.tokens} tokens 20 ms apart")
    late = await wakeup_lateness(url, conn, scale)
    report.samples["lateness_us"] = late
    what = "token bucket wake-up lateness past the token's due time"
    report.add(
        Figure(
            "lateness_p50_us",
            percentile(late, 50),
            "us",
            what + ", p50",
            per="ping_p50_us",
        )
    )
    report.add(
        Figure(
            "lateness_p99_us",
            percentile(late, 99),
            "us",
            what + ", p99",
            per="ping_p50_us",
            goal="<= 2000",
            goal_on_value=True,
        )
    )

    step(f"resources with {scale.waiters} waiters in one process")
    use = await asyncio.get_running_loop().run_in_executor(
        None, resources, url, conn, scale
    )
    n = scale.waiters
    report.add(
        Figure(
            "waiters_connections",
            use["connections"],
            "",
            f"Redis connections of a process with {n} waiters",
            goal="<= 8",
        )
    )
    report.add(
        Figure(
            "waiters_threads",
            use["threads"],
            "",
            f"OS threads of a process with {n} waiters",
            goal="<= 32",
        )
    )
    report.add(
        Figure(
            "waiters_rss_growth_mib",
            use["rss_growth_mib"],
            "MiB",
            f"RSS growth of a process for {n} waiters",
            goal="<= 64",
        )
    )


def table(report: Report) -> str:
    b, m = report.baseline, report.machine
    where = f"{m['cpus']} CPUs, {m['system']}, Python {m['python']}"
    base = f"PING p50 {b['ping_p50_us']:.0f} us, EVALSHA {b['evalsha_per_s']:,.0f}/s"
    lines = [
        f"machine: {where}, Redis {m.get('redis', '?')}",
        f"baseline (redis-benchmark, one connection): {base}",
        "",
        f"{'figure':<26} {'value':>12} {'ratio':>10}  {'goal':<16} {'met':<4}",
    ]
    for f in report.figures:
        value = f"{f.value:,.0f} {f.unit}" if f.unit != "MiB" else f"{f.value:.1f} MiB"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        goal = f"{f.goal} {f.unit}".rstrip() if f.goal else ""
        if f.goal and f.per and not f.goal_on_value:
            goal = f"{f.goal}x {BASELINE_NAMES[f.per]}"
        met = "" if f.met is None else ("yes" if f.met else "NO")
        lines.append(f"{f.name:<26} {value:>12} {ratio:>10}  {goal:<16} {met:<4}")
    lines.append("")
    lines.append("ratios: rates per EVALSHA/s, times per PING p50")
    return "\n".join(lines)


def plot(report: Report, path: str) -> None:
    """Draw the ratios and the latency distributions into a PNG."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "timely bench: --plot needs matplotlib; install it with "
            "`pip install 'timely[plot]'` (or `pip install matplotlib`)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    rated = [f for f in report.figures if f.ratio is not None]
    colours = {True: "tab:green", False: "tab:red", None: "tab:grey"}
    left.barh(
        [f.name for f in rated],
        [f.ratio or 0.0 for f in rated],
        color=[colours[f.met] for f in rated],
    )
    left.set_xscale("log")
    left.set_xlabel("ratio to baseline (rates: per EVALSHA/s; times: per PING p50)")
    left.invert_yaxis()
    left.set_title("ratios to the baseline (green: goal met, red: missed)")

    for label, xs in report.samples.items():
        s = sorted(xs)
        right.plot(s, [(i + 1) / len(s) for i in range(len(s))], label=label)
    right.set_xscale("log")
    right.set_xlabel("microseconds")
    right.set_ylabel("fraction of samples")
    right.axvline(2000, color="grey", linestyle=":", label="2 ms goal")
    right.legend()
    right.set_title("latency distributions")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m timely bench``."""
    parser = argparse.ArgumentParser(
        prog="timely bench",
        description=(
            "Measure timely's throughput, latency and resource use against a "
            "Redis server, each figure as a ratio to a baseline measured in the "
            "same run (redis-benchmark PING p50 and EVALSHA/s on one connection)."
        ),
    )
    parser.add_argument(
        "--redis-url",
        help="the Redis server to measure against, redis:// or unix:// (default: "
        "a private redis-server on a free port, from $TIMELY_REDIS_SERVER or "
        "PATH, stopped at the end)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also draw the figures (needs matplotlib)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run, for checking the suite"
    )
    args = parser.parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error(
                "--plot needs matplotlib: pip install 'timely[plot]' "
                "(or pip install matplotlib)"
            )
    if args.redis_url is not None:
        try:
            Target.parse(args.redis_url)
        except (TypeError, ValueError) as exc:
            parser.error(str(exc))
    scale = QUICK if args.quick else FULL

    with private_server() if args.redis_url is None else _given(args.redis_url) as url:
        report = run(url, scale)

    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def run(url: str, scale: Scale) -> Report:
    target = Target.parse(url)
    conn = Resp(target)
    try:
        report = Report(machine())
        info = conn.command("INFO", "server")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                report.machine["redis"] = line.split(":", 1)[1].strip()
        print("bench: baseline (redis-benchmark)", file=sys.stderr, flush=True)
        report.baseline = measure_baseline(target, conn, scale)
        asyncio.run(run_figures(url, conn, scale, report))
        return report
    finally:
        conn.close()
