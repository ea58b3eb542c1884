"""Where the state lives: both limiters on a standalone server, a unix
socket, TLS, an ACL user, a Redis Cluster, a master found through Sentinel
and the embedded memory://; failovers during use; key hygiene."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import pytest

from timely import (
    MaxSleepExceededError,
    RedisConnectionError,
    RedisSemaphore,
    RedisTokenBucket,
)

GRANT_DELAY = 2.0
"""Seconds within which a released permit must reach a waiter of another
client. The semaphores use expiry=30, so without the Pub/Sub grant the
waiter would only look again at a renewal, 10 s later."""


async def exercise(url: str, name: str, other_url: str | None = None) -> None:
    """Show that both limiters work at `url`.

    The semaphore never lets more than capacity tasks in, across two
    instances, and a permit released through one reaches a waiter of the
    other at once (a grant announced through Pub/Sub; `other_url`, when
    given, makes the second a separate client of the same Redis). The
    bucket lets its capacity through at once and the rest at the refill.
    """
    sems = [
        RedisSemaphore(f"{name}-sem", 2, url, expiry=30),
        RedisSemaphore(f"{name}-sem", 2, other_url or url, expiry=30),
    ]
    inside = peak = 0

    async def hold(sem: RedisSemaphore) -> None:
        nonlocal inside, peak
        async with sem:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.wait_for(
        asyncio.gather(*(hold(sems[i % 2]) for i in range(8))), timeout=30
    )
    assert peak == 2

    # Both permits held through the first instance; a waiter on the second.
    release = asyncio.Event()

    async def holder() -> None:
        async with sems[0]:
            await release.wait()

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    while (await sems[0].astate()).holders < 2:
        await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold(sems[1]))
    while (await sems[0].astate()).waiters < 1:
        await asyncio.sleep(0.01)
    release.set()
    start = time.monotonic()
    await asyncio.wait_for(waiter, timeout=15)
    assert time.monotonic() - start < GRANT_DELAY
    await asyncio.gather(*holders)

    bucket = RedisTokenBucket(3, 0.5, 3, url, name=f"{name}-bucket")
    start = time.monotonic()
    passed = []
    for _ in range(6):
        async with bucket:
            passed.append(time.monotonic() - start)
    assert passed[2] < 0.4
    assert passed[3] >= 0.3  # the next refill is 0.5 s after the first token
    for limiter in (*sems, bucket):
        limiter.close()


def key_slots(cluster: Any, name: str) -> set[int]:
    """The slots of every key and the channel of limiter `name` (both kinds)."""
    names = [f"timely:{{sem:{name}}}:{part}" for part in ("holders", "queue", "places", "info", "grants")]
    return {cluster.keyslot(k) for k in names}


def all_keys(servers: Iterable[Any]) -> list[tuple[Any, bytes]]:
    """Every key of the servers, with the server holding it."""
    found = []
    for server in servers:
        reply = server.command("KEYS", "*")
        assert isinstance(reply, list)
        found += [(server, key) for key in reply]
    return found


def assert_hygiene(servers: Iterable[Any]) -> None:
    """Every key starts with `timely:` and has a TTL."""
    for server, key in all_keys(servers):
        assert key.startswith(b"timely:"), key
        ttl = server.command("PTTL", key)
        # -2: the key went since KEYS listed it (a release still landing
        # emptied it); -1 would be a key without a TTL.
        assert isinstance(ttl, int) and (ttl > 0 or ttl == -2), (key, ttl)


async def wait_gone(servers: Iterable[Any], name: str, timeout: float) -> None:
    """Wait until no key of limiter `name` is left (its TTLs ran out)."""
    servers = list(servers)
    deadline = time.monotonic() + timeout
    while True:
        left = [k for _, k in all_keys(servers) if name.encode() in k]
        if not left:
            return
        assert time.monotonic() < deadline, f"keys left after {timeout} s: {left}"
        await asyncio.sleep(0.1)


async def use_and_go_idle(url: str, name: str) -> None:
    """Use both limiters briefly with short lifetimes, then close them."""
    sem = RedisSemaphore(name, 1, url, expiry=0.5)
    bucket = RedisTokenBucket(2, 0.2, 2, url, name=name)
    for _ in range(3):
        async with sem, bucket:
            pass
    sem.close()
    bucket.close()


# --- single servers -----------------------------------------------------------


async def test_standalone_server(feature_server: Any, unique_name: str) -> None:
    await exercise(feature_server.server.url, unique_name)
    assert_hygiene([feature_server.server])


async def test_unix_socket(feature_server: Any, unique_name: str) -> None:
    await exercise(
        feature_server.unix_url, unique_name, other_url=feature_server.server.url
    )
    assert_hygiene([feature_server.server])


async def test_tls_with_ca_file_and_client_certificate(
    feature_server: Any, unique_name: str
) -> None:
    await exercise(feature_server.tls_url(), unique_name)
    assert_hygiene([feature_server.server])


@pytest.mark.parametrize("missing", ["ca", "client certificate"])
async def test_tls_refuses_an_unverified_connection(
    feature_server: Any, unique_name: str, missing: str
) -> None:
    url = feature_server.tls_url(ca=missing != "ca", client_cert=missing == "ca")
    sem = RedisSemaphore(unique_name, 1, url, max_sleep=5)
    with pytest.raises(RedisConnectionError):
        async with sem:
            pass
    sem.close()


def test_tls_trusts_ssl_cert_file(feature_server: Any, unique_name: str) -> None:
    """With no ssl_ca_certs, the server is verified against the system's
    store, which SSL_CERT_FILE replaces (read once per process, hence a
    child process)."""
    url = feature_server.tls_url(ca=False)
    code = (
        "import asyncio, timely\n"
        f"async def main():\n"
        f"    async with timely.RedisSemaphore({unique_name!r}, 1, {url!r}, max_sleep=10):\n"
        "        print('acquired')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(feature_server.tls.ca)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "acquired"


async def test_acl_user_limited_to_timely_keys(
    feature_server: Any, unique_name: str
) -> None:
    server, user = feature_server.server, feature_server.ACL_USER
    # The user really is limited: other keys and channels are refused.
    assert server.command("ACL", "DRYRUN", user, "SET", "other", "1") != "OK"
    assert server.command("ACL", "DRYRUN", user, "PUBLISH", "other", "1") != "OK"
    assert server.command("ACL", "DRYRUN", user, "SET", "timely:x", "1") != "OK"
    await exercise(feature_server.acl_url, unique_name)
    assert_hygiene([server])


async def test_password_never_shown(feature_server: Any, unique_name: str) -> None:
    url = feature_server.acl_url.replace(feature_server.ACL_PASSWORD, "wrong-pw")
    sem = RedisSemaphore(unique_name, 1, url, max_sleep=5)
    assert "wrong-pw" not in repr(sem)
    with pytest.raises(RedisConnectionError) as caught:
        async with sem:
            pass
    assert "wrong-pw" not in str(caught.value)
    sem.close()


async def test_keys_vanish_once_idle(feature_server: Any, unique_name: str) -> None:
    await use_and_go_idle(feature_server.server.url, unique_name)
    assert [k for _, k in all_keys([feature_server.server]) if unique_name.encode() in k]
    await wait_gone([feature_server.server], unique_name, timeout=5)


async def test_memory(unique_name: str) -> None:
    await exercise(f"memory://{unique_name}", unique_name)


# --- cluster --------------------------------------------------------------------


async def test_cluster(redis_cluster: Any, unique_name: str) -> None:
    # A second client of the same cluster, reached through another node.
    other = f"redis+cluster://127.0.0.1:{redis_cluster.nodes[-1].port}"
    await exercise(redis_cluster.url, unique_name, other_url=other)
    assert_hygiene(redis_cluster.masters())


async def test_cluster_spreads_limiters_over_slots(
    redis_cluster: Any, unique_name: str
) -> None:
    names = [f"{unique_name}-{i}" for i in range(12)]
    # Every key of one limiter, and its channel, share one slot.
    for name in names:
        assert len(key_slots(redis_cluster, name)) == 1
    slots = {redis_cluster.keyslot(f"timely:{{sem:{n}}}") for n in names[:6]} | {
        redis_cluster.keyslot(f"timely:{{bucket:{n}}}") for n in names[6:]
    }
    assert len(slots) >= 4

    # Each limiter runs its scripts; a CROSSSLOT reply would raise here.
    sems = [RedisSemaphore(n, 2, redis_cluster.url, expiry=5) for n in names[:6]]
    buckets = [RedisTokenBucket(5, 1, 5, redis_cluster.url, name=n) for n in names[6:]]

    async def use(limiter: Any) -> None:
        for _ in range(3):
            async with limiter:
                await asyncio.sleep(0.01)

    async def hold_all() -> None:
        async with sems[0], sems[1], sems[2], sems[3], sems[4], sems[5]:
            assert [(await s.astate()).holders for s in sems] == [1] * 6
            stored = {redis_cluster.keyslot(k.decode()) for _, k in all_keys(redis_cluster.masters()) if any(n.encode() in k for n in names)}
            # The keys really live in the spread slots, on several masters.
            assert len(stored) >= 4
            owners = {s.port for s, k in all_keys(redis_cluster.masters()) if any(n.encode() in k for n in names)}
            assert len(owners) >= 2

    await asyncio.wait_for(asyncio.gather(*(use(x) for x in (*sems, *buckets))), 30)
    await asyncio.wait_for(hold_all(), 30)
    assert_hygiene(redis_cluster.masters())
    for limiter in (*sems, *buckets):
        limiter.close()


async def test_cluster_keys_vanish_once_idle(
    redis_cluster: Any, unique_name: str
) -> None:
    await use_and_go_idle(redis_cluster.url, unique_name)
    await wait_gone(redis_cluster.masters(), unique_name, timeout=5)


# --- sentinel -------------------------------------------------------------------


async def test_sentinel(redis_sentinel: Any, unique_name: str) -> None:
    await exercise(redis_sentinel.url, unique_name)
    assert_hygiene([redis_sentinel.master])


# --- failovers ------------------------------------------------------------------

FAILOVER_GRACE = 3.0
"""Seconds after the new master is in place during which clients may still
fail: go-redis learns of the change from the errors of its next calls."""


class Workload:
    """Tasks that keep acquiring a semaphore and a token bucket, recording
    when each acquisition succeeded or failed."""

    def __init__(self, url: str, name: str) -> None:
        self.sem = RedisSemaphore(name, 4, url, expiry=3, max_sleep=5)
        self.bucket = RedisTokenBucket(1000, 0.1, 1000, url, name=name, max_sleep=5)
        self.ok: list[tuple[float, str]] = []
        self.failed: list[tuple[float, str, str]] = []
        self.running = True
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._loop(limiter, kind))
            for limiter, kind in ((self.sem, "sem"), (self.bucket, "bucket"))
            for _ in range(4)
        ]

    async def _loop(self, limiter: Any, kind: str) -> None:
        while self.running:
            try:
                async with limiter:
                    await asyncio.sleep(0.01)
                self.ok.append((time.monotonic(), kind))
            except (RedisConnectionError, MaxSleepExceededError) as err:
                self.failed.append((time.monotonic(), kind, str(err)))
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.running = False
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
        self.sem.close()
        self.bucket.close()

    def check(self, failed_at: float, recovered_at: float, until: float) -> None:
        """Errors only between the failure and the grace after recovery;
        both limiters work before and after."""
        for kind in ("sem", "bucket"):
            assert any(t < failed_at for t, k in self.ok if k == kind), kind
            after = [t for t, k in self.ok if k == kind and t > recovered_at + FAILOVER_GRACE]
            assert len(after) >= 10, (kind, len(after))
        outside = [
            f for f in self.failed if not failed_at <= f[0] <= recovered_at + FAILOVER_GRACE
        ]
        assert not outside, outside[:5]
        assert until > recovered_at + FAILOVER_GRACE


async def run_through(workload: Workload, fail: Any, recovered: Any) -> None:
    """Run the workload, cause the failure, wait for recovery, run on."""
    workload.start()
    await asyncio.sleep(1.0)
    failed_at = time.monotonic()
    await asyncio.to_thread(fail)
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(recovered):
        assert time.monotonic() < deadline, "no failover within 30 s"
        await asyncio.sleep(0.1)
    recovered_at = time.monotonic()
    await asyncio.sleep(FAILOVER_GRACE + 2.0)
    until = time.monotonic()
    await workload.stop()
    workload.check(failed_at, recovered_at, until)


async def test_cluster_master_failover(make_cluster: Any, unique_name: str) -> None:
    cluster = make_cluster()
    workload = Workload(cluster.url, unique_name)
    # Fail the master that serves the semaphore's slot.
    slot = cluster.keyslot(f"timely:{{sem:{unique_name}}}")
    for start, end, master, *_ in cluster.nodes[0].command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            victim = next(n for n in cluster.nodes if n.port == master[1])
    replica = cluster.replica_of(victim)

    def recovered() -> bool:
        return (
            info_field_role(replica) == "master"
            and cluster.healthy()
        )

    await run_through(workload, victim.kill, recovered)
    assert_hygiene(cluster.masters())


async def test_sentinel_failover(make_sentinel: Any, unique_name: str) -> None:
    setup = make_sentinel()
    workload = Workload(setup.url, unique_name)

    def recovered() -> bool:
        return (
            setup.master_port() == setup.replica.port
            and info_field_role(setup.replica) == "master"
        )

    await run_through(workload, setup.master.kill, recovered)
    assert_hygiene([setup.replica])


def info_field_role(server: Any) -> str:
    reply = server.command("ROLE")
    assert isinstance(reply, list) and isinstance(reply[0], bytes)
    return reply[0].decode()


# --- URL validation at construction -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://:hunter2@h1:7000,h2",
        "redis+cluster://:hunter2@h1:7000,h2:0",
        "redis+cluster://:hunter2@h1:7000/1",
        "redis+cluster://:hunter2@h1:7000?addr=h2:7001",
        "redis+cluster://:hunter2@h1:7000,[::1]:7001",
        "redis+sentinel://:hunter2@s1:26379",
        "redis+sentinel://:hunter2@s1:26379/svc/x",
        "redis+sentinel://s1:26379/svc?password=hunter2",
        "redis://:hunter2@h:6379?ssl_ca_certs=/ca.pem",
        "rediss://:hunter2@h:6379?ssl_certfile=/c.pem",
        "rediss://:hunter2@h:6379?ssl_ca_certs=",
        "memory://x?db=1",
    ],
)
def test_bad_urls_are_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url") as caught:
        RedisSemaphore("x", 1, url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://u:pw@h1:7000,h2:7001",
        "rediss+cluster://h1:7000?ssl_ca_certs=/ca.pem",
        "redis+sentinel://s1:26379,s2:26380/svc/2?dial_timeout=1s",
        "rediss+sentinel://s1:26379/svc?ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
        "unix:///run/redis.sock?db=1",
        "memory://demo",
    ],
)
def test_good_urls_are_accepted(url: str) -> None:
    assert RedisTokenBucket(1, 1, 1, url).redis_url.startswith(url.split(":")[0])
