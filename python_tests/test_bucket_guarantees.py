"""The token bucket's guarantees (SPEC section 3), shown with several OS
processes sharing one bucket on a real redis-server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().parent / "workers" / "bucket_worker.py"

CAPACITY, AMOUNT, PERIOD = 5, 2, 0.2
JITTER = 0.005  # recording an admission happens a little after it


def run_workers(
    mode: str, processes: int, start: float = 0.0, **args: Any
) -> list[dict[str, Any]]:
    """Run workers to the end from a common start (default: in 1.5 s, time
    for every interpreter to start) and return their results."""
    start = start or time.monotonic() + 1.5
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                mode,
                json.dumps(dict(args, seed=i, start=start)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        results.append(json.loads(out))
    return results


def worst_window(times: list[float], capacity: int, amount: int, period: float) -> str:
    """The first window of 0.1 s to 4 s that holds more admissions than
    capacity + amount * ceil(T / period), or '' if none does."""
    times = sorted(times)
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            span = times[j] - first
            if span > 4.0:
                break
            t = max(span - JITTER, 0.1)
            bound = capacity + amount * math.ceil(t / period)
            if j - i + 1 > bound:
                return f"{j - i + 1} admissions within {span:.3f}s (bound {bound})"
    return ""


def test_conformance_utilisation_and_fifo(
    redis_server: Any, unique_name: str, fifo_overtaken: Any
) -> None:
    results = run_workers(
        "tasks",
        3,
        url=redis_server.url,
        name=unique_name,
        capacity=CAPACITY,
        amount=AMOUNT,
        period=PERIOD,
        tasks=40,
        spread=2.0,
    )
    records = [r for res in results for r in res["records"]]
    assert len(records) == 120
    admits = sorted(r["admit"] for r in records)

    # 1. Conformance, in every window of 0.1 s to 4 s.
    assert worst_window(admits, CAPACITY, AMOUNT, PERIOD) == ""

    # 2. Utilisation once the first burst is spent: from the 6th admission
    # on, the bucket runs at its rate of 2 per 0.2 s.
    rest = admits[CAPACITY:]
    rate = (len(rest) - 1) / (rest[-1] - rest[0])
    assert rate >= 0.95 * AMOUNT / PERIOD, f"{rate:.2f}/s of {AMOUNT / PERIOD}/s"

    # 3. FIFO: of two waiters whose asks are further apart than the jitter,
    # the earlier is admitted first.
    inversions = fifo_overtaken(records, "admit", 0.03)
    assert inversions == [], f"{len(inversions)} overtaken, e.g. {inversions[0]}"


def test_cancelled_waiters_tokens_are_reused(redis_server: Any, unique_name: str) -> None:
    duration = 4.0
    common = dict(
        url=redis_server.url,
        capacity=CAPACITY,
        amount=AMOUNT,
        period=PERIOD,
        workers=8,
        patience=0.6,
        until=0.0,
    )
    start = time.monotonic() + 1.5
    common["until"] = start + duration
    results = run_workers("loop", 3, start, name=unique_name, cancel=0.3, **common)
    admitted = sorted(t for res in results for t in res["admitted"])
    cancelled = sum(res["cancelled"] for res in results)
    assert cancelled >= 10, "the test needs cancelled waiters"
    assert worst_window(admitted, CAPACITY, AMOUNT, PERIOD) == ""
    # Once the burst is spent, cancelled waiters' tokens go to others: the
    # bucket keeps (nearly) its full rate despite the cancellations.
    rest = admitted[CAPACITY:]
    rate = (len(rest) - 1) / (rest[-1] - rest[0])
    loss = 1 - rate / (AMOUNT / PERIOD)
    print(f"\n{cancelled} cancellations; admissions {rate:.2f}/s, loss {loss:.1%}")
    assert loss <= 0.10, f"cancellations cost {loss:.1%} of the rate"
