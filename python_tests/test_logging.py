"""Records of the Go core reach Python's logging under `timely`, and
nothing is printed unless the application configures logging."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from timely import RedisSemaphore


async def test_a_go_warning_reaches_the_timely_logger(
    fresh_redis: Any, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = fresh_redis()
    sem = RedisSemaphore(unique_name, 1, server.url, expiry=0.3)
    with caplog.at_level(logging.DEBUG, logger="timely"):
        async with sem:
            # Redis loses the lease; the core's next renewal finds out.
            server.command("FLUSHALL")
            await asyncio.sleep(1.0)
    go_side = [
        r
        for r in caplog.records
        if r.getMessage().startswith("timely: permit lease expired while held")
    ]
    assert go_side, [r.getMessage() for r in caplog.records]
    record = go_side[0]
    assert record.name == "timely"
    assert record.levelno == logging.WARNING
    assert f"semaphore={unique_name}" in record.getMessage()


CHILD = """
import logging, sys, time
from timely import RedisSemaphore

seen = []
logging.getLogger("timely").addFilter(lambda r: seen.append(r.getMessage()) or True)
sem = RedisSemaphore(sys.argv[1], 1, sys.argv[2], expiry=0.3)
with sem:
    print("held", flush=True)
    sys.stdin.readline()  # the parent flushed Redis
    time.sleep(1.0)
print(len(seen), flush=True)
"""


def test_silent_by_default(fresh_redis: Any, unique_name: str) -> None:
    server = fresh_redis()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), unique_name, server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "held"
    server.command("FLUSHALL")
    out, err = child.communicate("go\n", timeout=30)
    assert child.returncode == 0, err
    assert int(out.strip()) >= 2  # the Go warning and the failed release
    assert err == ""


UNREACHABLE = """
import sys
from timely import RedisConnectionError, RedisSemaphore

sem = RedisSemaphore(sys.argv[1], 1, sys.argv[2])
try:
    with sem:
        pass
except RedisConnectionError:
    print("refused", flush=True)
"""


def test_an_unreachable_redis_prints_nothing(
    fresh_redis: Any, unique_name: str
) -> None:
    """The Go Redis client's own messages (failed dials) are records of the
    `timely` logger too, not lines on stderr."""
    server = fresh_redis()
    server.kill()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(UNREACHABLE), unique_name, server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "refused\n"
    assert out.stderr == ""
