"""Process life: fork before and after first use, interpreter shutdown with
waiters pending, and a Go panic turned into an exception."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from timely import TimelyError, _bridge


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fork_after_construction_works_in_the_child(
    redis_server: Any, unique_name: str
) -> None:
    out = run_script(
        f"""
        import asyncio, os
        from timely import RedisSemaphore, RedisTokenBucket
        sem = RedisSemaphore({unique_name!r}, 2, {redis_server.url!r})
        bucket = RedisTokenBucket(5, 1, 5, {redis_server.url!r}, name={unique_name!r})

        async def use():
            async with sem:
                async with bucket:
                    return (await sem.astate()).holders

        pid = os.fork()
        if pid == 0:
            os._exit(0 if asyncio.run(use()) == 1 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert asyncio.run(use()) == 1  # the parent can still use them too
        print("ok")
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_fork_after_use_gives_the_child_a_clear_error(
    redis_server: Any, unique_name: str
) -> None:
    out = run_script(
        f"""
        import asyncio, os
        from timely import RedisSemaphore, ForkedProcessError
        sem = RedisSemaphore({unique_name!r}, 2, {redis_server.url!r})

        async def use():
            async with sem:
                pass

        asyncio.run(use())
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(use())
            except ForkedProcessError as exc:
                print("child:", exc, flush=True)
                os._exit(0)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        """,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "forked child" in out.stdout


def test_shutdown_with_pending_waiters_is_prompt(
    redis_server: Any, unique_name: str
) -> None:
    start = time.monotonic()
    out = run_script(
        f"""
        import asyncio, threading
        from timely import RedisSemaphore, RedisTokenBucket
        sem = RedisSemaphore({unique_name!r}, 1, {redis_server.url!r})
        bucket = RedisTokenBucket(1, 3600, 1, {redis_server.url!r}, name={unique_name!r})

        def blocked_thread():
            with sem:
                pass

        async def main():
            await sem.__aenter__()  # held for good: everyone else waits
            async with bucket:
                pass
            waiters = [asyncio.ensure_future(sem.__aenter__()) for _ in range(300)]
            waiters += [asyncio.ensure_future(bucket.__aenter__()) for _ in range(300)]
            threading.Thread(target=blocked_thread, daemon=True).start()
            await asyncio.sleep(0.5)
            print("pending", sum(not w.done() for w in waiters), flush=True)

        asyncio.run(main())
        """,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pending 600"
    assert time.monotonic() - start < 10


def test_a_go_panic_becomes_an_exception() -> None:
    with pytest.raises(TimelyError, match="panic"):
        _bridge.call("SelfTest", "panic")
    # The interpreter and the Go core live on.
    assert _bridge.call("Version") == "0.1.0"
