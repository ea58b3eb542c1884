"""Limiters as decorators of sync and async functions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from timely import RedisSemaphore, RedisTokenBucket


async def test_semaphore_guards_a_coroutine_function(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 2, redis_server.url)
    inside = most = 0

    @sem
    async def fetch(i: int) -> int:
        """Fetch item i."""
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.02)
        inside -= 1
        return i * 10

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch item i."
    assert asyncio.iscoroutinefunction(fetch)
    results = await asyncio.gather(*(fetch(i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert most == 2
    assert await sem.astate() == (2, 0, 0)


async def test_an_exception_passes_through_and_releases(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 1, redis_server.url)

    @sem
    async def fail() -> None:
        assert (await sem.astate()).holders == 1
        raise KeyError("boom")

    @sem
    def fail_sync() -> None:
        assert sem.state().holders == 1
        raise KeyError("sync boom")

    with pytest.raises(KeyError, match="boom"):
        await fail()
    with pytest.raises(KeyError, match="sync boom"):
        await asyncio.to_thread(fail_sync)
    assert await sem.astate() == (1, 0, 0)


def test_semaphore_guards_a_function_called_from_threads(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 2, redis_server.url)
    lock = threading.Lock()
    inside = most = 0

    @sem
    def work(x: int, *, twice: bool = False) -> int:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)
        with lock:
            inside -= 1
        return 2 * x if twice else x

    results: list[int] = []

    def worker(i: int) -> None:
        for _ in range(3):
            results.append(work(i, twice=True))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == sorted(2 * i for i in range(5) for _ in range(3))
    assert most == 2
    assert work.__name__ == "work"
    assert sem.state() == (2, 0, 0)


async def test_token_bucket_decorator_paces_calls(
    redis_server: Any, unique_name: str
) -> None:
    bucket = RedisTokenBucket(2, 0.1, 1, redis_server.url, name=unique_name)
    calls: list[float] = []

    @bucket
    async def call_api() -> None:
        calls.append(time.monotonic())

    @bucket
    def call_api_sync() -> None:
        calls.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(call_api() for _ in range(4)))
    await asyncio.to_thread(call_api_sync)
    # Two at once, then one per 0.1 s: the fifth is due at 0.3 s.
    assert len(calls) == 5
    assert calls[1] - start < 0.09
    assert 0.29 <= max(calls) - start < 1.0


def test_generator_functions_are_refused(unique_name: str) -> None:
    sem = RedisSemaphore(unique_name, 1, "redis://localhost:1")

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        sem(gen)
    with pytest.raises(TypeError, match="generator function"):
        sem(agen)
    with pytest.raises(TypeError, match="decorates a function"):
        sem(42)  # type: ignore[call-overload]
