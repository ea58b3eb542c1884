"""The `timely` command: `python -m timely demo` runs both limiters on the
embedded Redis; `inspect` reads the limiters of a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from timely import RedisSemaphore, RedisTokenBucket


def timely(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "timely", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_finishes_and_reports() -> None:
    out = timely("demo", "--workers", "6", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "at most 3 holders at once (capacity 3)" in out.stdout
    assert "18 calls admitted" in out.stdout


def test_demo_reports_progress_on_a_redis_server(redis_server: Any) -> None:
    out = timely("demo", "--workers", "4", "--redis-url", redis_server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # Not a terminal: progress comes as plain lines between start and end.
    assert any("semaphore:" in line and "bucket:" in line for line in lines[1:-1])
    assert "12 calls admitted" in lines[-1]


@pytest.mark.parametrize("command", ["demo", "inspect"])
def test_every_command_has_help(command: str) -> None:
    out = timely(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: timely {command}")
    assert "--redis-url" in out.stdout


def test_top_level_help_lists_the_commands() -> None:
    out = timely("--help")
    assert out.returncode == 0, out.stderr
    for command in ("demo", "inspect", "bench"):
        assert f"    {command} " in out.stdout


def test_bad_arguments_are_named() -> None:
    out = timely("demo", "--workers", "0")
    assert out.returncode == 2
    assert "--workers must be >= 1, not 0" in out.stderr
    out = timely("inspect", "--redis-url", "memory://")
    assert out.returncode == 2
    assert "memory://" in out.stderr
    out = timely("inspect", "--redis-url", "http://example")
    assert out.returncode == 1
    assert "unsupported scheme 'http'" in out.stderr


def test_inspect_shows_limiters_that_a_test_created(
    redis_server: Any, unique_name: str
) -> None:
    sem_name, bucket_name = f"{unique_name}-sem", f"{unique_name}-bucket"
    sem = RedisSemaphore(sem_name, 2, redis_server.url, expiry=5)
    bucket = RedisTokenBucket(10, 60, 5, redis_server.url, name=bucket_name)
    for _ in range(3):
        with bucket:
            pass
    def wait_for_a_permit() -> None:
        with sem:
            pass

    with sem, sem:
        waiter = threading.Thread(target=wait_for_a_permit)
        waiter.start()
        deadline = time.monotonic() + 5
        while sem.state().waiters == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

        url = redis_server.url
        table = timely("inspect", "--redis-url", url, sem_name, bucket_name)
        everything = timely("inspect", "--redis-url", redis_server.url, "--json")
    waiter.join(timeout=10)
    assert sem.state() == (2, 0, 0)

    assert table.returncode == 0, table.stderr
    rows = {line.split()[1]: line.split() for line in table.stdout.splitlines()[1:]}
    assert table.stdout.split()[:7] == [
        "KIND", "NAME", "CAPACITY", "HOLDERS", "TOKENS", "WAITING", "SETTINGS"
    ]
    assert rows[sem_name][:6] == ["semaphore", sem_name, "2", "2", "-", "1"]
    assert rows[bucket_name][:6] == ["bucket", bucket_name, "10", "-", "7", "0"]
    assert "refill 5 every 60s" in table.stdout
    assert "expiry 5s" in table.stdout

    # Without names, a SCAN finds them among the other tests' limiters.
    assert everything.returncode == 0, everything.stderr
    found = {(d["kind"], d["name"]): d for d in json.loads(everything.stdout)}
    assert found["semaphore", sem_name]["holders"] == 2
    assert found["semaphore", sem_name]["waiters"] == 1
    assert found["bucket", bucket_name]["tokens"] == 7
    assert found["bucket", bucket_name]["refill_frequency"] == 60


def test_inspect_reports_unknown_names(redis_server: Any, unique_name: str) -> None:
    out = timely("inspect", "--redis-url", redis_server.url, unique_name)
    assert out.returncode == 1
    assert "no limiters found with these names" in out.stdout
    assert f"no limiter named {unique_name!r}" in out.stderr


def test_inspect_an_unreachable_redis_fails_clearly(fresh_redis: Any) -> None:
    server = fresh_redis()
    server.kill()
    out = timely("inspect", "--redis-url", server.url)
    assert out.returncode == 1
    assert out.stderr.startswith("timely inspect: ")
    assert "Traceback" not in out.stderr
