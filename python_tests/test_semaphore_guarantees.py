"""The semaphore's guarantees (SPEC section 2), shown with several OS
processes sharing one limiter on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from timely import MaxSleepExceededError, RedisSemaphore

WORKER = Path(__file__).resolve().parent / "workers" / "semaphore_worker.py"


def start_worker(mode: str, **args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_event(proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"worker exited with {proc.wait()} before {event!r}"
    data: dict[str, Any] = json.loads(line)
    assert data["event"] == event, data
    return data


def run_task_workers(processes: int, **args: Any) -> list[dict[str, Any]]:
    """Run task workers to the end; return every record, checking that none
    failed."""
    start = time.monotonic() + 1.5  # time for every interpreter to start
    procs = [
        start_worker("tasks", seed=i, start=start, **args) for i in range(processes)
    ]
    records: list[dict[str, Any]] = []
    for proc in procs:
        done = read_event(proc, "done")
        assert proc.wait(timeout=60) == 0
        assert done["errors"] == []
        records += done["records"]
    return records


def most_at_once(records: list[dict[str, Any]]) -> int:
    """The most holds overlapping at one instant. Recorded holds start
    after the grant and end before the release, so they never overlap more
    than the real ones."""
    edges = sorted(
        [(r["grant"], 1) for r in records if "grant" in r]
        + [(r["release"], -1) for r in records if "grant" in r],
        key=lambda e: (e[0], e[1]),
    )
    inside = most = 0
    for _, step in edges:
        inside += step
        most = max(most, inside)
    return most


async def settled(sem: RedisSemaphore, want: tuple[int, int, int]) -> tuple[int, ...]:
    """The semaphore's state once it equals want, or the last one seen."""
    state: tuple[int, ...] = ()
    for _ in range(300):
        state = tuple(await sem.astate())
        if state == want:
            break
        await asyncio.sleep(0.01)
    return state


async def test_safety_across_processes_with_cancellations(
    redis_server: Any, unique_name: str
) -> None:
    records = run_task_workers(
        4,
        url=redis_server.url,
        name=unique_name,
        capacity=3,
        tasks=100,
        spread=0.5,
        hold=[0.001, 0.010],
        cancel=0.2,
    )
    granted = [r for r in records if "grant" in r]
    assert len(granted) >= 200, "most tasks should have run"
    assert len(granted) < 400, "some tasks should have been cancelled"
    assert most_at_once(records) == 3
    sem = RedisSemaphore(unique_name, 3, redis_server.url)
    assert await settled(sem, (3, 0, 0)) == (3, 0, 0), "permits leaked"


async def test_fifo_across_processes(
    redis_server: Any, unique_name: str, fifo_overtaken: Any
) -> None:
    records = run_task_workers(
        4,
        url=redis_server.url,
        name=unique_name,
        capacity=3,
        tasks=50,
        spread=3.0,
        hold=[0.030, 0.050],
        cancel=0.0,
    )
    assert len(records) == 200 and all("grant" in r for r in records)
    queued = [r for r in records if r["grant"] - r["ask"] > 0.05]
    assert len(queued) >= 40, "the test needs a queue to check its order"
    # For every two waiters whose asks are further apart than the jitter of
    # recording them and reaching Redis, the earlier is granted first.
    inversions = fifo_overtaken(records, "grant", 0.03)
    assert inversions == [], f"{len(inversions)} waiters overtaken, e.g. {inversions[0]}"


async def test_permits_of_a_killed_process_come_back_within_expiry(
    redis_server: Any, unique_name: str
) -> None:
    expiry = 2.0
    holder = start_worker(
        "hold", url=redis_server.url, name=unique_name, capacity=3, count=3, expiry=expiry
    )
    try:
        read_event(holder, "held")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    killed = time.monotonic()
    sem = RedisSemaphore(unique_name, 3, redis_server.url, expiry=expiry)
    async with sem:
        waited = time.monotonic() - killed
    assert waited <= expiry + 1.0, f"the dead holder's permits took {waited:.2f}s"
    assert waited >= 0.5, "the killed process's leases should have been live"


async def test_a_frozen_holder_loses_its_permits_and_adds_no_capacity(
    redis_server: Any, unique_name: str
) -> None:
    expiry = 1.0
    holder = start_worker(
        "hold", url=redis_server.url, name=unique_name, capacity=3, count=3, expiry=expiry
    )
    sem = RedisSemaphore(unique_name, 3, redis_server.url, expiry=expiry)
    try:
        read_event(holder, "held")
        holder.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        taken = asyncio.Event()
        leave = asyncio.Event()
        inside = 0

        async def enter() -> None:
            nonlocal inside
            async with sem:
                inside += 1
                if inside == 3:
                    taken.set()
                await leave.wait()

        tasks = [asyncio.ensure_future(enter()) for _ in range(3)]
        await asyncio.wait_for(taken.wait(), timeout=expiry + 2.0)
        assert time.monotonic() - frozen <= expiry + 1.0

        # Thawed, the old holder learns of the loss; its exits add nothing.
        holder.send_signal(signal.SIGCONT)
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        released = read_event(holder, "released")
        assert released["lost"] == [True, True, True]
        assert released["state"][1] == 3, "the thawed exits must not free our permits"
        with pytest.raises(MaxSleepExceededError):
            async with RedisSemaphore(unique_name, 3, redis_server.url, max_sleep=0):
                pass
        leave.set()
        await asyncio.gather(*tasks)
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()
    assert await settled(sem, (3, 0, 0)) == (3, 0, 0)


def clients(server: Any) -> int:
    """Connections the server has, less the one asking."""
    listing = server.command("CLIENT", "LIST")
    text = listing.decode() if isinstance(listing, bytes) else str(listing)
    return len([line for line in text.splitlines() if line.strip()]) - 1


async def test_ten_thousand_waiters_share_a_few_connections(
    fresh_redis: Any, unique_name: str
) -> None:
    server = fresh_redis()
    sem = RedisSemaphore(unique_name, 1, server.url)
    release = asyncio.Event()

    async def hold() -> None:
        async with sem:
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await asyncio.sleep(0.1)
    waiters = [asyncio.ensure_future(sem.__aenter__()) for _ in range(10_000)]
    assert await settled(sem, (1, 1, 10_000)) == (1, 1, 10_000)
    used = clients(server)
    assert 1 <= used <= 8, f"{used} connections for 10,000 waiters"
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    release.set()
    await holder
    assert await settled(sem, (1, 0, 0)) == (1, 0, 0)


async def test_processes_with_different_capacities(
    redis_server: Any, unique_name: str
) -> None:
    # Each call grants up to the capacity of the process making it, so the
    # largest capacity in use bounds the holders.
    small = RedisSemaphore(unique_name, 2, redis_server.url)
    large = RedisSemaphore(unique_name, 4, redis_server.url)
    inside = most = 0

    async def use(sem: RedisSemaphore) -> None:
        nonlocal inside, most
        async with sem:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(use(small) for _ in range(40)), *(use(large) for _ in range(40)))
    assert 2 <= most <= 4
    assert (await large.astate()).holders == 0
