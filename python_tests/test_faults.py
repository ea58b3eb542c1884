"""Faults (SPEC section 5): Redis killed, restarted empty or frozen under
waiting and holding tasks; failing open; secrets kept out of messages."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest

from timely import (
    MaxSleepExceededError,
    RedisConnectionError,
    RedisSemaphore,
    RedisTokenBucket,
    TimelyError,
)


async def wait_for_holders(sem: RedisSemaphore, n: int) -> None:
    for _ in range(500):
        if (await sem.astate()).holders == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {n} holders")


async def test_killed_redis_ends_waits_and_releases_then_service_resumes(
    fresh_redis: Any, unique_name: str
) -> None:
    server = fresh_redis()
    expiry = 1.5
    sem = RedisSemaphore(unique_name, 1, server.url, expiry=expiry)
    bounded = RedisSemaphore(unique_name, 1, server.url, expiry=expiry, max_sleep=0.5)
    holding = asyncio.Event()
    leave = asyncio.Event()

    async def hold() -> None:
        async with sem:
            holding.set()
            await leave.wait()

    holder = asyncio.ensure_future(hold())
    await holding.wait()

    async def wait(s: RedisSemaphore) -> tuple[BaseException | None, float]:
        start = time.monotonic()
        try:
            async with s:
                return None, time.monotonic() - start
        except BaseException as exc:
            return exc, time.monotonic() - start

    unbounded_wait = asyncio.ensure_future(wait(sem))
    bounded_wait = asyncio.ensure_future(wait(bounded))
    await asyncio.sleep(0.2)
    server.kill()

    exc, took = await asyncio.wait_for(bounded_wait, 10)
    assert isinstance(exc, MaxSleepExceededError) and took < 0.5 + 0.5
    # Without max_sleep, the wait ends at the next renewal (expiry / 3),
    # which finds Redis gone.
    exc, took = await asyncio.wait_for(unbounded_wait, 15)
    assert isinstance(exc, RedisConnectionError), exc
    assert took < expiry / 3 + 5.5

    # Releasing during the outage neither raises nor hangs.
    start = time.monotonic()
    leave.set()
    await asyncio.wait_for(holder, 10)
    assert time.monotonic() - start < 6

    # Redis comes back, empty: service resumes by itself, once the client
    # probes the server again (each second while it is down).
    server.restart()
    await resumed(sem)


async def resumed(sem: RedisSemaphore) -> None:
    """Check that sem serves again within a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        try:
            async with sem:
                assert (await sem.astate()).holders == 1
            return
        except RedisConnectionError:
            assert time.monotonic() < deadline, "service did not resume"
            await asyncio.sleep(0.1)


async def test_restart_that_loses_data_tells_live_holders(
    fresh_redis: Any, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = fresh_redis()
    expiry = 0.9
    sem = RedisSemaphore(unique_name, 1, server.url, expiry=expiry)
    leave = asyncio.Event()
    lost_inside: list[bool] = []
    entered = asyncio.Event()

    async def hold() -> None:
        async with sem as permit:
            entered.set()
            await leave.wait()
            lost_inside.append(permit.lost)

    holder = asyncio.ensure_future(hold())
    await entered.wait()
    server.restart()  # empty: the lease is gone
    # A newcomer gets the permit at once: Redis no longer knows the holder.
    async with RedisSemaphore(unique_name, 1, server.url, expiry=expiry, max_sleep=2):
        # The old holder learns at its next renewal (within expiry / 3).
        await asyncio.sleep(expiry / 3 + 0.5)
        with caplog.at_level(logging.WARNING, logger="timely"):
            leave.set()
            await holder
        assert lost_inside == [True]
        # Its release added nothing: the newcomer is still the only holder.
        assert (await sem.astate()).holders == 1
    assert any("expired" in r.getMessage() for r in caplog.records)


async def test_frozen_redis_ends_waits(fresh_redis: Any, unique_name: str) -> None:
    server = fresh_redis()
    sem = RedisSemaphore(unique_name, 1, server.url, max_sleep=1.0)
    bucket = RedisTokenBucket(1, 60, 1, server.url, name=unique_name, max_sleep=1.0)
    async with sem:
        async with bucket:
            pass
    server.stop()
    try:
        for limiter in (sem, bucket):
            start = time.monotonic()
            with pytest.raises(TimelyError):
                async with limiter:
                    pass
            assert time.monotonic() - start < 1.5
    finally:
        server.cont()
    await resumed(sem)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_fail_open_lets_work_through_with_a_warning(
    unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{unused_port()}"
    sem = RedisSemaphore(unique_name, 1, url, fail_open=True)
    bucket = RedisTokenBucket(1, 60, 1, url, name=unique_name, fail_open=True)
    ran = 0
    with caplog.at_level(logging.WARNING, logger="timely"):
        async with sem as permit:
            async with bucket:
                ran += 1
        with sem:
            with bucket:
                ran += 1
    assert ran == 2
    assert permit.lost is False
    assert sum("failing open" in r.getMessage() for r in caplog.records) == 4
    strict = RedisSemaphore(unique_name, 1, url)
    with pytest.raises(RedisConnectionError):
        async with strict:
            pass


async def test_passwords_stay_out_of_messages_and_logs(
    fresh_redis: Any, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = fresh_redis()
    server.command("CONFIG", "SET", "requirepass", "right-one")
    url = f"redis://default:hunter2-secret@127.0.0.1:{server.port}"
    sem = RedisSemaphore(unique_name, 1, url, fail_open=True)
    bucket = RedisTokenBucket(1, 1, 1, url, name=unique_name)
    with caplog.at_level(logging.DEBUG, logger="timely"):
        async with sem:  # fails open, logging the error
            pass
        with pytest.raises(RedisConnectionError) as info:
            async with bucket:
                pass
    texts = [repr(sem), str(sem), repr(bucket), str(info.value), repr(info.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records, "the failure should have been logged"
    assert not [t for t in texts if "hunter2-secret" in t]
