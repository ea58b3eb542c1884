"""Many tasks of one process on one limiter: limits hold, everything
completes, and the event loop is never blocked."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from timely import RedisSemaphore, RedisTokenBucket

T = TypeVar("T")


async def with_ticker(work: Awaitable[T], period: float = 0.01) -> tuple[T, float]:
    """Run work while a ticker on the same loop measures its worst lag."""
    worst = 0.0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not stop.is_set():
            start = time.monotonic()
            await asyncio.sleep(period)
            worst = max(worst, time.monotonic() - start - period)

    ticker = asyncio.ensure_future(tick())
    try:
        result = await work
    finally:
        stop.set()
        await ticker
    return result, worst


async def test_thousand_tasks_on_semaphore(redis_server: Any, unique_name: str) -> None:
    sem = RedisSemaphore(name=unique_name, capacity=10, redis_url=redis_server.url)
    inside = most = done = 0

    async def task() -> None:
        nonlocal inside, most, done
        async with sem:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1
        done += 1

    _, lag = await with_ticker(asyncio.gather(*(task() for _ in range(1000))))
    assert done == 1000
    assert most == 10, f"at most {most} holders at once, capacity 10"
    assert lag < 0.1, f"event loop blocked for {lag:.3f}s"
    assert await sem.astate() == (10, 0, 0)


async def test_thousand_tasks_on_token_bucket(
    redis_server: Any, unique_name: str
) -> None:
    capacity, amount, period = 100, 100, 0.1
    bucket = RedisTokenBucket(
        capacity=capacity,
        refill_frequency=period,
        refill_amount=amount,
        name=unique_name,
        redis_url=redis_server.url,
    )
    times: list[float] = []

    async def task() -> None:
        async with bucket:
            times.append(time.monotonic())

    start = time.monotonic()
    _, lag = await with_ticker(asyncio.gather(*(task() for _ in range(1000))))
    elapsed = time.monotonic() - start
    assert len(times) == 1000
    assert lag < 0.1, f"event loop blocked for {lag:.3f}s"
    # A burst of 100, then 100 per 0.1 s: the last token is due after 0.9 s.
    assert elapsed >= 0.85, f"1000 admissions in {elapsed:.3f}s beat the rate"
    # Conformance: no window of length T holds more than
    # capacity + amount * ceil(T / period), allowing 5 ms of recording jitter.
    times.sort()
    j = 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] - t <= 0.35:
            j += 1
        for k in range(i, j):
            span = max(times[k] - t - 0.005, 0.0)
            bound = capacity + amount * max(1, math.ceil(span / period))
            assert k - i + 1 <= bound, f"{k - i + 1} admissions within {span:.3f}s"
