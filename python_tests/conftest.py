"""Fixtures that run real redis-server processes for the Python tests.

The binary is `$TIMELY_REDIS_SERVER`, else `redis-server` from PATH; a missing
binary fails the tests that need it (`make deps` installs it). Every server
listens on a free loopback port, keeps nothing on disk and is stopped when its
fixture ends.

- `redis_server`: one server shared by the whole session. Tests keep apart by
  naming their limiters with `unique_name`; never flush it. A test that kills,
  freezes or restarts it gets it back alive after the test, but should use
  `fresh_redis` instead.
- `fresh_redis` (alias `make_redis`): a factory; each call starts a server
  owned by the calling test, for tests that kill, freeze or restart Redis.
- `unique_name`: a limiter name no other test uses.

This module must not import timely: the tests decide when the native module
loads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeAlias

import pytest

STARTUP_TIMEOUT = 10.0
"""Seconds a starting redis-server has to answer PING."""

STOP_TIMEOUT = 5.0
"""Seconds a redis-server has to exit after SIGTERM before it gets SIGKILL."""

START_ATTEMPTS = 5
"""Tries at binding a port another process may have taken meanwhile."""

RespValue: TypeAlias = str | int | bytes | list["RespValue"] | None
"""A decoded reply: simple strings as str, bulk strings as bytes."""


class RedisError(Exception):
    """The server answered a command with an error reply."""


class RedisServer:
    """One redis-server process on 127.0.0.1, owned by the tests.

    The port stays the same across `restart()`; the pid does not. The data
    lives only in memory, so a kill or restart loses it all.
    """

    __slots__ = ("_log", "binary", "port", "proc", "workdir")

    def __init__(self, binary: str, workdir: Path) -> None:
        """Start a server on a free port and wait until it answers.

        :param binary: path of the redis-server executable.
        :param workdir: an empty folder for the server's log and files.
        """
        self.binary = binary
        self.workdir = workdir
        self._log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            if self._start():
                return
        raise RuntimeError(f"redis-server did not start: {self._log_tail()}")

    @property
    def url(self) -> str:
        """The URL timely takes: `redis://127.0.0.1:PORT`."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id of the latest server process, running or not."""
        if self.proc is None:
            raise RuntimeError(f"redis-server on port {self.port} never started")
        return self.proc.pid

    def kill(self) -> None:
        """Kill the server at once with SIGKILL, as a crash would."""
        proc = self._running()
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open, no replies."""
        os.kill(self._running().pid, signal.SIGSTOP)

    def cont(self) -> None:
        """Resume a server frozen by `stop()`, with SIGCONT."""
        os.kill(self._running().pid, signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server if it runs, then start it again, empty, on its port.

        Clients see a dropped connection and, once they reconnect, a server
        that has lost every key.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        for _ in range(START_ATTEMPTS):
            if self._start():
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"redis-server did not restart on port {self.port}: {self._log_tail()}"
        )

    def alive(self) -> bool:
        """Tell whether the process runs and answers PING within a second."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return self.command("PING", timeout=1.0) == "PONG"
        except (OSError, RedisError):
            return False

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> RespValue:
        """Send one command over a new connection and return the decoded reply.

        For inspecting what a limiter left in Redis without a client library;
        an error reply raises `RedisError`.

        :param args: the command and its arguments, e.g. `("TTL", key)`.
        :param timeout: seconds to wait for the connection and the reply.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout) as sock:
            sock.sendall(encode_command(args))
            with sock.makefile("rb") as stream:
                return read_reply(stream)

    def close(self) -> None:
        """Stop the server for good, frozen or not; safe to call twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _start(self) -> bool:
        """Start a process on `self.port`; tell whether it answers PING.

        A process that exits or stays silent is cleaned up before returning
        False, so the caller can try again.
        """
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                    *("--dir", str(self.workdir)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.alive():
                return True
            time.sleep(0.02)
        self.close()
        return False

    def _running(self) -> subprocess.Popen[bytes]:
        """Return the process, or raise if there is none to signal."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} is not running")
        return self.proc

    def _log_tail(self) -> str:
        """The last lines the server logged, for error messages."""
        lines = self._log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-10:]) or "(no output)"

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"RedisServer(url={self.url!r}, pid={pid})"


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def encode_command(args: tuple[str | bytes | int, ...]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def read_reply(stream: BinaryIO) -> RespValue:
    """Decode one RESP2 reply from a binary file object."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RedisError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from redis-server: {line!r}")


def redis_binary() -> str:
    """Find redis-server, or fail the test with what to do about it."""
    binary = os.environ.get("TIMELY_REDIS_SERVER") or shutil.which("redis-server")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(
            "redis-server not found: install it (`make deps`) or set "
            f"TIMELY_REDIS_SERVER (now {os.environ.get('TIMELY_REDIS_SERVER')!r})",
            pytrace=False,
        )
    return binary


MakeRedis = Callable[[], RedisServer]
"""Starts a new redis-server owned by the calling test."""


@pytest.fixture(scope="session")
def _session_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer]:
    """The redis-server shared by every test of the session."""
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis-shared"))
    yield server
    server.close()


@pytest.fixture
def redis_server(_session_redis: RedisServer) -> Iterator[RedisServer]:
    """The session's shared redis-server; name limiters with `unique_name`.

    A test that killed, froze or restarted it leaves it running again for the
    next test (emptied, if it was killed).
    """
    yield _session_redis
    if _session_redis.proc is not None and _session_redis.proc.poll() is None:
        _session_redis.cont()
    if not _session_redis.alive():
        _session_redis.restart()


@pytest.fixture
def fresh_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRedis]:
    """A factory of redis-servers owned by this test, stopped when it ends."""
    servers: list[RedisServer] = []

    def make_redis() -> RedisServer:
        server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
        servers.append(server)
        return server

    yield make_redis
    for server in servers:
        server.close()


@pytest.fixture
def make_redis(fresh_redis: MakeRedis) -> MakeRedis:
    """The same factory as `fresh_redis`, under the name of its call."""
    return fresh_redis


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A limiter name that no other test, run or process uses.

    Readable in Redis: the end of the test's node id, then random hex.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.nodeid)
    return f"{readable[-60:].strip('-')}-{uuid.uuid4().hex[:16]}"
