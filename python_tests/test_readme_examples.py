"""The README's two examples, run verbatim but for the URL, against a real
redis-server. The code is read from README.md itself, so the two cannot
drift apart."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from timely import RedisSemaphore, RedisTokenBucket

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_URL = "redis://localhost:6379"


def examples() -> list[str]:
    """The first two python code blocks of the README's usage section."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    found = [b for b in blocks if "RedisSemaphore(" in b or "RedisTokenBucket(" in b]
    assert len(found) >= 2, "the README lost its examples"
    return found[:2]


def as_coroutine(code: str, url: str) -> Any:
    """Compile a top-level-await example into a coroutine function."""
    assert code.count(DEFAULT_URL) == 1, "each example names the default URL once"
    body = textwrap.indent(code.replace(DEFAULT_URL, url), "    ")
    namespace: dict[str, Any] = {}
    exec(compile(f"async def example():\n{body}", str(README), "exec"), namespace)
    return namespace["example"]


async def test_semaphore_example_runs(redis_server: Any) -> None:
    code = examples()[0]
    assert 'name="my-api-rate-limit"' in code
    await as_coroutine(code, redis_server.url)()
    # It ran on this Redis: the semaphore recorded its capacity there and
    # gave its permit back on exit.
    state = RedisSemaphore("my-api-rate-limit", 10, redis_server.url).state()
    assert state == (10, 0, 0)


async def test_token_bucket_example_admits_one_burst(fresh_redis: Any) -> None:
    server = fresh_redis()  # the example uses the default name: keep it apart
    example = as_coroutine(examples()[1], server.url)
    task = asyncio.ensure_future(example())
    await asyncio.sleep(1.0)
    assert not task.done(), "the example's loop is endless"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # capacity=10 refilled by 10 every 60 s: one burst of 10 passed, and the
    # 11th entry waits for the refill a minute away, so nothing else went by.
    bucket = RedisTokenBucket(10, 60, 10, server.url)
    state = await bucket.astate()
    for _ in range(200):  # the token goes back in the background
        if state.waiting == 0:
            break
        await asyncio.sleep(0.01)
        state = await bucket.astate()
    assert state.tokens == 0
    assert state.waiting == 0, "the canceled 11th entry gave its token back"
