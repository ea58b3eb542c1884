"""Everyday behaviour of both limiters against a real redis-server:
max_sleep, cancellation, threads, nesting, state, errors."""

from __future__ import annotations

import asyncio
import threading
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


async def test_max_sleep_zero_takes_only_a_free_permit(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 1, redis_server.url, max_sleep=0)
    async with sem:
        start = time.monotonic()
        with pytest.raises(MaxSleepExceededError):
            async with sem:
                pass
        assert time.monotonic() - start < 1.0
    async with sem:
        assert (await sem.astate()).holders == 1


async def test_max_sleep_bounds_the_wait(redis_server: Any, unique_name: str) -> None:
    holder = RedisSemaphore(unique_name, 1, redis_server.url)
    waiter = RedisSemaphore(unique_name, 1, redis_server.url, max_sleep=0.2)
    async with holder:
        start = time.monotonic()
        with pytest.raises(MaxSleepExceededError):
            async with waiter:
                pass
        waited = time.monotonic() - start
        assert 0.19 <= waited < 2.0
    for _ in range(100):  # the refused waiter leaves the queue in the background
        if (await holder.astate()).waiters == 0:
            break
        await asyncio.sleep(0.01)
    assert await holder.astate() == (1, 0, 0)


async def test_token_bucket_refuses_a_long_wait_at_once(
    redis_server: Any, unique_name: str
) -> None:
    first = RedisTokenBucket(1, 2, 1, redis_server.url, name=unique_name)
    hurried = RedisTokenBucket(1, 2, 1, redis_server.url, name=unique_name, max_sleep=0.5)
    start = time.monotonic()
    async with first:
        pass
    before = time.monotonic()
    with pytest.raises(MaxSleepExceededError):
        async with hurried:
            pass
    assert time.monotonic() - before < 0.1
    async with first:  # the refusal took nothing: this one is due at 2 s
        pass
    assert 1.95 <= time.monotonic() - start < 2.5


async def test_cancelled_waiters_leak_nothing(redis_server: Any, unique_name: str) -> None:
    sem = RedisSemaphore(unique_name, 2, redis_server.url)

    async def hold(t: float) -> None:
        async with sem:
            await asyncio.sleep(t)

    tasks = [asyncio.ensure_future(hold(0.005)) for _ in range(60)]
    for i, task in enumerate(tasks):
        if i % 3 == 0:
            await asyncio.sleep(0.002)
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(200):
        if await sem.astate() == (2, 0, 0):
            break
        await asyncio.sleep(0.01)
    assert await sem.astate() == (2, 0, 0)


async def test_one_instance_entered_by_many_tasks_releases_each_entry(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 3, redis_server.url)
    entered = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with sem:
            async with sem:  # nested entry by the same task: a second permit
                entered.set()
                await release_first.wait()
            assert (await sem.astate()).holders == 1

    task = asyncio.ensure_future(first())
    await entered.wait()
    assert (await sem.astate()).holders == 2
    async with sem:
        assert (await sem.astate()).holders == 3
    release_first.set()
    await task
    assert (await sem.astate()).holders == 0


def test_threads_share_one_instance(redis_server: Any, unique_name: str) -> None:
    sem = RedisSemaphore(unique_name, 2, redis_server.url)
    lock = threading.Lock()
    inside = most = 0
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, most
        try:
            for _ in range(10):
                with sem:
                    with lock:
                        inside += 1
                        most = max(most, inside)
                    time.sleep(0.002)
                    with lock:
                        inside -= 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert most == 2
    assert sem.state() == (2, 0, 0)


def test_sync_token_bucket(redis_server: Any, unique_name: str) -> None:
    bucket = RedisTokenBucket(2, 0.1, 1, redis_server.url, name=unique_name)
    start = time.monotonic()
    for _ in range(4):
        with bucket:
            pass
    # Two at once, then one per 0.1 s.
    assert 0.19 <= time.monotonic() - start < 1.0


async def test_unreachable_redis_is_a_connection_error(unique_name: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    sem = RedisSemaphore(unique_name, 1, f"redis://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(RedisConnectionError) as info:
        async with sem:
            pass
    assert isinstance(info.value, TimelyError)
    assert time.monotonic() - start < 10


def test_repr_hides_the_password(unique_name: str) -> None:
    sem = RedisSemaphore(unique_name, 1, "redis://user:s3cret@localhost:6379/0")
    assert "s3cret" not in repr(sem)
    assert "s3cret" not in sem.redis_url
    assert "***" in repr(sem)
