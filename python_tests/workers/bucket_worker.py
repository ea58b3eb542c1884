"""A worker process for the multi-process token bucket tests.

Run as ``python bucket_worker.py MODE JSON_ARGS``; it prints one JSON line
when done, with times on CLOCK_MONOTONIC (shared by all processes of a
machine). Modes:

- ``tasks``: ``tasks`` tasks each ask once, at a random moment within
  ``spread`` seconds of the common ``start``.
- ``loop``: ``workers`` tasks each acquire in a loop until ``until``, each
  acquisition cancelled after a random timeout with probability ``cancel``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from timely import RedisTokenBucket


def bucket(a: dict[str, Any]) -> RedisTokenBucket:
    return RedisTokenBucket(
        a["capacity"], a["period"], a["amount"], a["url"], name=a["name"]
    )


async def tasks(a: dict[str, Any]) -> None:
    b = bucket(a)
    rng = random.Random(a["seed"])
    records: list[dict[str, float]] = []

    async def one() -> None:
        await asyncio.sleep(max(0.0, a["start"] + rng.uniform(0, a["spread"]) - time.monotonic()))
        rec = {"ask": time.monotonic()}
        async with b:
            rec["admit"] = time.monotonic()
        records.append(rec)

    await asyncio.gather(*(one() for _ in range(a["tasks"])))
    print(json.dumps({"records": records}), flush=True)


async def loop(a: dict[str, Any]) -> None:
    b = bucket(a)
    rng = random.Random(a["seed"])
    admitted: list[float] = []
    cancelled = 0

    async def take() -> None:
        async with b:
            admitted.append(time.monotonic())

    async def worker() -> None:
        nonlocal cancelled
        while time.monotonic() < a["until"]:
            if rng.random() < a["cancel"]:
                try:
                    await asyncio.wait_for(take(), rng.uniform(0.0, a["patience"]))
                except asyncio.TimeoutError:
                    cancelled += 1
            else:
                await take()

    await asyncio.sleep(max(0.0, a["start"] - time.monotonic()))
    await asyncio.gather(*(worker() for _ in range(a["workers"])))
    print(json.dumps({"admitted": admitted, "cancelled": cancelled}), flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run({"tasks": tasks, "loop": loop}[mode](args))
