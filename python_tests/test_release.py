"""The release at the end of ``async with``: it goes to Redis in the
background, so an exit never waits for Redis, and still nothing is lost:
the process's own state reads include it, a lease found gone still sets
``permit.lost``, and an exiting interpreter lets it land first."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from timely import RedisSemaphore, RedisTokenBucket


async def test_exit_returns_while_redis_is_frozen_and_the_release_lands_later(
    fresh_redis: Any, unique_name: str
) -> None:
    server = fresh_redis()
    sem = RedisSemaphore(unique_name, 1, server.url)
    async with sem as permit:
        server.stop()
        started = time.monotonic()
    exit_took = time.monotonic() - started
    try:
        # Frozen for longer than the exit took: nothing waited for Redis.
        await asyncio.sleep(0.3)
        assert exit_took < 0.1
    finally:
        server.cont()
    # The release was not dropped: it lands once Redis answers again.
    assert (await sem.astate()).holders == 0
    assert permit.lost is False
    # The permit is free for the next holder at once.
    async with RedisSemaphore(unique_name, 1, server.url, max_sleep=0):
        pass


async def test_a_release_not_followed_by_an_acquisition_still_goes_at_once(
    redis_server: Any, unique_name: str
) -> None:
    # A release waits for the next acquisition of its turn of the loop, so
    # that both share one round trip; with none, it goes at the end of the
    # turn, not at the next renewal (expiry / 3 = 3.3 s here).
    holder = RedisSemaphore(unique_name, 1, redis_server.url)
    other = RedisSemaphore(unique_name, 1, redis_server.url)  # another Go limiter

    async def wait_for_the_permit() -> float:
        async with other:
            return time.monotonic()

    async with holder:
        waiter = asyncio.create_task(wait_for_the_permit())
        while other.state().waiters < 1:
            await asyncio.sleep(0.01)
        released = time.monotonic()
    granted = await waiter  # the exit above was the last use of `holder`
    assert granted - released < 0.3
    holder.close()
    other.close()


async def test_state_read_after_exit_includes_the_release(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 2, redis_server.url)
    for _ in range(100):
        async with sem:
            async with sem:
                assert sem.state().holders == 2
            assert sem.state().holders == 1
        assert (await sem.astate()).holders == 0


async def test_release_that_finds_the_lease_gone_marks_the_permit_lost(
    redis_server: Any, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # expiry 30 s: no renewal comes before the exit, so the release is
    # the first to find the lease gone.
    sem = RedisSemaphore(unique_name, 1, redis_server.url, expiry=30)
    with caplog.at_level(logging.WARNING, logger="timely"):
        async with sem as permit:
            redis_server.command(
                "DEL",
                f"timely:{{sem:{unique_name}}}:holders",
            )
            assert permit.lost is False  # nobody has looked yet
        await sem.astate()  # the release has had its answer by now
        assert permit.lost is True
    assert any("expired before release" in r.getMessage() for r in caplog.records)
    # The lost release gave nothing back: a newcomer took the only permit.
    async with sem:
        assert (await sem.astate()).holders == 1


def test_exiting_interpreter_waits_for_releases_still_on_their_way(
    fresh_redis: Any, unique_name: str
) -> None:
    server = fresh_redis()
    code = f"""
        import asyncio, os, signal
        from timely import RedisSemaphore

        async def main():
            sem = RedisSemaphore({unique_name!r}, 1, {server.url!r}, expiry=60)
            async with sem:
                # Freeze Redis: the release cannot land before the end of main.
                os.kill({server.pid}, signal.SIGSTOP)
            print("released", flush=True)

        asyncio.run(main())
        """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "released"
        time.sleep(0.3)
        # The child is still there, waiting for its release to land.
        assert child.poll() is None
    finally:
        server.cont()
    assert child.wait(timeout=10) == 0
    # Landed before the exit: free now, not after the 60 s lease.
    sem = RedisSemaphore(unique_name, 1, server.url, max_sleep=0)
    assert sem.state().holders == 0


async def test_an_acquisition_told_to_wait_does_not_hold_the_loop(
    redis_server: Any, unique_name: str
) -> None:
    from timely import _bridge

    sem = RedisSemaphore(unique_name, 1, redis_server.url)
    bucket = RedisTokenBucket(1, 60, 1, redis_server.url, name=unique_name)
    async with sem, bucket:
        # Both now must wait: the permit is held, the next token is a
        # minute away. Even with a budget of 2 s to wait in the calling
        # thread, the call returns once Redis has said so.
        n = _bridge.notifier()
        for limiter in (sem, bucket):
            started = time.monotonic()
            op = _bridge.fast(
                "gobridge_Acquire", limiter._limiter(), n.id, -1, 2_000_000
            )
            took = time.monotonic() - started
            assert op > 0, "pending, not completed"
            assert took < 1.0, f"{limiter!r}: the call held the thread {took:.3f} s"
            _bridge.call("Cancel", op)

