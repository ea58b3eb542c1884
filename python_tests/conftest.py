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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

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

    __slots__ = ("_log", "args", "binary", "port", "proc", "workdir")

    def __init__(
        self, binary: str, workdir: Path, args: Sequence[str] = ()
    ) -> None:
        """Start a server on a free port and wait until it answers.

        :param binary: path of the redis-server executable.
        :param workdir: an empty folder for the server's log and files.
        :param args: more command-line arguments (`--cluster-enabled yes`,
            TLS files, ...); a first argument that is not an option names a
            configuration file.
        """
        self.binary = binary
        self.args = tuple(args)
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
            config = self.args[:1] if self.args[:1] and not self.args[0].startswith("-") else ()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    *config,
                    *self.args[len(config) :],
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


# --- Topologies: cluster, Sentinel, TLS, unix socket, ACL user -------------
#
# Each starts its own redis-server processes on free ports and stops them
# when its fixture ends. The module-scoped ones are shared by the tests of
# one module; a test that kills or fails over a server makes its own with
# the factories instead.

CLUSTER_NODE_TIMEOUT_MS = 1000
"""How long a cluster node may stay silent before its peers fail it over."""

SENTINEL_DOWN_AFTER_MS = 1000
"""How long a master may stay silent before Sentinel fails it over."""

ACL_COMMANDS = (
    "+evalsha +eval +time +hget +hmget +hset +hincrby +pexpire +publish "
    "+zadd +zcard +zcount +zrange +zrangebyscore +zrem +zremrangebyscore "
    "+zmscore +zpopmin +subscribe +unsubscribe +ping"
)
"""The commands a user of timely needs on a standalone server or a
Sentinel-managed master: the scripts' own commands (ACLs apply inside
scripts), running scripts, and Pub/Sub for grants. The README shows it."""


Record: TypeAlias = dict[str, Any]
Inversions: TypeAlias = list[tuple[Record, Record]]


def overtaken(records: list[Record], served: str, jitter: float) -> Inversions:
    """The pairs (a, b) of records whose "ask" times are further apart than
    jitter, b asking later, where b was still served (time ``served``) more
    than jitter before a: each breaks FIFO beyond the jitter of recording
    the times and reaching Redis."""
    by_ask = sorted(records, key=lambda r: r["ask"])
    return [
        (a, b)
        for i, a in enumerate(by_ask)
        for b in by_ask[i + 1 :]
        if b["ask"] - a["ask"] > jitter and a[served] - b[served] > jitter
    ]


@pytest.fixture
def fifo_overtaken() -> Callable[[list[Record], str, float], Inversions]:
    """:func:`overtaken`, for test modules (which cannot import this one)."""
    return overtaken


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` every 50 ms until it is true; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RedisError):
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting until {what}", pytrace=False)


def redis_cli_binary() -> str:
    """Find redis-cli next to redis-server, or on PATH."""
    server = Path(redis_binary())
    beside = server.with_name("redis-cli")
    found = str(beside) if beside.exists() else shutil.which("redis-cli")
    if not found:
        pytest.fail("redis-cli not found: install redis-tools (`make deps`)", pytrace=False)
    return found


def info_field(server: RedisServer, section: str, field: str) -> str:
    """One field of INFO (or CLUSTER INFO when `section` is "cluster")."""
    reply = (
        server.command("CLUSTER", "INFO")
        if section == "cluster"
        else server.command("INFO", section)
    )
    assert isinstance(reply, bytes)
    for line in reply.decode().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return value.strip()
    return ""


class RedisCluster:
    """Three masters with one replica each, every node a RedisServer."""

    __slots__ = ("nodes",)

    def __init__(self, binary: str, workdir_of: Callable[[str], Path]) -> None:
        """Start six cluster-enabled servers and join them with redis-cli.

        :param workdir_of: makes an empty folder for a node, given its name.
        """
        self.nodes: list[RedisServer] = []
        try:
            for i in range(6):
                workdir = workdir_of(f"cluster-node{i}")
                self.nodes.append(
                    RedisServer(
                        binary,
                        workdir,
                        (
                            *("--cluster-enabled", "yes"),
                            *("--cluster-config-file", str(workdir / "nodes.conf")),
                            *("--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)),
                            # A replica may take over however long it was
                            # cut off: the test kills masters seconds after
                            # the cluster forms.
                            *("--cluster-replica-validity-factor", "0"),
                        ),
                    )
                )
            subprocess.run(
                [
                    redis_cli_binary(),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    *("--cluster-replicas", "1", "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_until("every cluster node reports cluster_state:ok", self.healthy)
            wait_until(
                "every replica is in sync with its master",
                lambda: all(
                    info_field(n, "replication", "master_link_status") == "up"
                    for n in self.nodes
                    if info_field(n, "replication", "role") == "slave"
                ),
            )
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """`redis+cluster://` naming two of the nodes (discovery finds the rest)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def healthy(self) -> bool:
        """Every running node sees all slots served."""
        return all(
            info_field(n, "cluster", "cluster_state") == "ok"
            for n in self.nodes
            if n.alive()
        )

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        return [n for n in self.nodes if n.alive() and info_field(n, "replication", "role") == "master"]

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A running replica of `master`."""
        for n in self.nodes:
            if n is not master and n.alive() and info_field(
                n, "replication", "master_port"
            ) == str(master.port):
                return n
        raise AssertionError(f"{master!r} has no replica")

    def keyslot(self, key: str) -> int:
        """The cluster slot of `key`, as the server computes it."""
        slot = self.nodes[0].command("CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class RedisSentinel:
    """A master, its replica, and one Sentinel watching them (quorum 1)."""

    SERVICE = "timely-test"

    __slots__ = ("master", "replica", "sentinel")

    def __init__(self, binary: str, workdir_of: Callable[[str], Path]) -> None:
        """Start the three processes and wait until Sentinel knows the replica."""
        started: list[RedisServer] = []
        try:
            self.master = RedisServer(binary, workdir_of("sentinel-master"))
            started.append(self.master)
            self.replica = RedisServer(
                binary,
                workdir_of("sentinel-replica"),
                ("--replicaof", "127.0.0.1", str(self.master.port)),
            )
            started.append(self.replica)
            workdir = workdir_of("sentinel")
            config = workdir / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
            )
            self.sentinel = RedisServer(binary, workdir, (str(config), "--sentinel"))
            started.append(self.sentinel)
            wait_until(
                "the replica is in sync and Sentinel knows it",
                lambda: info_field(self.replica, "replication", "master_link_status")
                == "up"
                and self.sentinel_replicas() == 1,
            )
        except BaseException:
            for server in started:
                server.close()
            raise

    @property
    def url(self) -> str:
        """`redis+sentinel://` naming the Sentinel and the service."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def sentinel_replicas(self) -> int:
        reply = self.sentinel.command("SENTINEL", "REPLICAS", self.SERVICE)
        return len(reply) if isinstance(reply, list) else 0

    def master_port(self) -> int:
        """The port of the master Sentinel names now."""
        reply = self.sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        assert isinstance(reply, list) and isinstance(reply[1], bytes)
        return int(reply[1])

    def close(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.close()


class TLSFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, all signed by that CA and made with openssl."""

    __slots__ = ("ca", "client_cert", "client_key", "server_cert", "server_key")

    def __init__(self, folder: Path) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            pytest.fail("openssl not found: install it (`make deps`)", pytrace=False)
        self.ca = folder / "ca.crt"
        self.server_cert, self.server_key = folder / "server.crt", folder / "server.key"
        self.client_cert, self.client_key = folder / "client.crt", folder / "client.key"
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

        run("req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(self.ca),
            "-days", "1", "-subj", "/CN=timely test CA")
        for cert, key, name, ext in (
            (self.server_cert, self.server_key, "server",
             "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            (self.client_cert, self.client_key, "client", "extendedKeyUsage=clientAuth\n"),
        ):
            csr, extfile = folder / f"{name}.csr", folder / f"{name}.ext"
            extfile.write_text(ext)
            run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr),
                "-subj", f"/CN=timely test {name}")
            run("x509", "-req", "-in", str(csr), "-CA", str(self.ca),
                "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-out", str(cert),
                "-days", "1", "-extfile", str(extfile))


class FeatureServer:
    """One redis-server that also listens on a unix socket and on a TLS
    port (client certificates required), with an ACL user limited to
    `timely:*` keys and channels."""

    ACL_USER = "timely-user"
    ACL_PASSWORD = "acl-S3cret-pw"

    __slots__ = ("server", "socket", "tls", "tls_port")

    def __init__(self, binary: str, workdir: Path) -> None:
        self.tls = TLSFiles(workdir)
        self.socket = workdir / "redis.sock"
        self.tls_port = free_port()
        self.server = RedisServer(
            binary,
            workdir,
            (
                *("--unixsocket", str(self.socket), "--unixsocketperm", "700"),
                *("--tls-port", str(self.tls_port)),
                *("--tls-cert-file", str(self.tls.server_cert)),
                *("--tls-key-file", str(self.tls.server_key)),
                *("--tls-ca-cert-file", str(self.tls.ca)),
                *("--tls-auth-clients", "yes"),
            ),
        )
        self.server.command(
            "ACL", "SETUSER", self.ACL_USER, "reset", "on", f">{self.ACL_PASSWORD}",
            "~timely:*", "&timely:*", *ACL_COMMANDS.split(),
        )

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def acl_url(self) -> str:
        return f"redis://{self.ACL_USER}:{self.ACL_PASSWORD}@127.0.0.1:{self.server.port}"

    def tls_url(self, ca: bool = True, client_cert: bool = True) -> str:
        """`rediss://` to the TLS port, naming the CA file and the client
        certificate when asked to."""
        params = []
        if ca:
            params.append(f"ssl_ca_certs={self.tls.ca}")
        if client_cert:
            params += [f"ssl_certfile={self.tls.client_cert}", f"ssl_keyfile={self.tls.client_key}"]
        return f"rediss://127.0.0.1:{self.tls_port}" + ("?" + "&".join(params) if params else "")

    def close(self) -> None:
        self.server.close()


MakeCluster = Callable[[], RedisCluster]
MakeSentinel = Callable[[], RedisSentinel]


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeCluster]:
    """A factory of Redis Clusters owned by this test, stopped when it ends."""
    made: list[RedisCluster] = []

    def make() -> RedisCluster:
        made.append(RedisCluster(redis_binary(), tmp_path_factory.mktemp))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster shared by the tests of one module; never fail it over."""
    cluster = RedisCluster(redis_binary(), tmp_path_factory.mktemp)
    yield cluster
    cluster.close()


@pytest.fixture
def make_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeSentinel]:
    """A factory of Sentinel-managed masters owned by this test."""
    made: list[RedisSentinel] = []

    def make() -> RedisSentinel:
        made.append(RedisSentinel(redis_binary(), tmp_path_factory.mktemp))
        return made[-1]

    yield make
    for setup in made:
        setup.close()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A Sentinel-managed master shared by the tests of one module."""
    setup = RedisSentinel(redis_binary(), tmp_path_factory.mktemp)
    yield setup
    setup.close()


@pytest.fixture(scope="module")
def feature_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureServer]:
    """A server with a unix socket, TLS and an ACL user, shared by a module."""
    server = FeatureServer(redis_binary(), tmp_path_factory.mktemp("features"))
    yield server
    server.close()
