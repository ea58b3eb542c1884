"""A worker process for the multi-process semaphore tests.

Run as ``python semaphore_worker.py MODE JSON_ARGS``; it prints one JSON
line per event on stdout. Modes:

- ``tasks``: runs many tasks on one semaphore, some cancelled at random
  moments, and prints their recorded times (on CLOCK_MONOTONIC, which all
  processes of a machine share) when done.
- ``hold``: enters the semaphore ``count`` times, prints ``held``, then
  waits for a line on stdin before exiting every entry, and prints whether
  each permit was lost and what the release left.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from timely import Permit, RedisSemaphore


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def tasks(a: dict[str, Any]) -> None:
    sem = RedisSemaphore(a["name"], a["capacity"], a["url"], expiry=a.get("expiry", 10))
    rng = random.Random(a["seed"])
    records: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        rec: dict[str, Any] = {"process": a["seed"], "task": i}
        records.append(rec)
        await asyncio.sleep(rng.uniform(0, a["spread"]))
        rec["ask"] = time.monotonic()
        async with sem:
            rec["grant"] = time.monotonic()
            try:
                await asyncio.sleep(rng.uniform(*a["hold"]))
            finally:
                rec["release"] = time.monotonic()

    # Wait for the common start, so that the processes overlap.
    await asyncio.sleep(max(0.0, a["start"] - time.monotonic()))
    running = [asyncio.ensure_future(one(i)) for i in range(a["tasks"])]
    for task in running:
        if rng.random() < a["cancel"]:
            asyncio.get_running_loop().call_later(
                rng.uniform(0, a["spread"] + 2 * a["hold"][1]), task.cancel
            )
    results = await asyncio.gather(*running, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    errors = [repr(r) for r in results if isinstance(r, Exception)]
    emit(event="done", records=records, cancelled=cancelled, errors=errors)


async def hold(a: dict[str, Any]) -> None:
    sem = RedisSemaphore(a["name"], a["capacity"], a["url"], expiry=a["expiry"])
    entered = asyncio.Event()
    leave = asyncio.Event()
    inside = 0

    async def enter() -> Permit:
        nonlocal inside
        async with sem as permit:
            inside += 1
            if inside == a["count"]:
                entered.set()
            await leave.wait()
        return permit

    running = [asyncio.ensure_future(enter()) for _ in range(a["count"])]
    await entered.wait()
    emit(event="held")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    leave.set()
    permits = await asyncio.gather(*running)
    # The state read settles the releases first, so their answers are in.
    state = list(await sem.astate())
    emit(event="released", lost=[p.lost for p in permits], state=state)


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run({"tasks": tasks, "hold": hold}[mode](args))
