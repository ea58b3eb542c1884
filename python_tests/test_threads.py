"""Sync use: `with limiter:` from threads that share one instance."""

from __future__ import annotations

import threading
import time
from typing import Any

from timely import RedisSemaphore


def test_six_threads_never_exceed_two_holders(
    redis_server: Any, unique_name: str
) -> None:
    """6 threads x 10 entries on one capacity-2 semaphore: never more than 2
    holders, as counted by the threads and as Redis counts them."""
    sem = RedisSemaphore(unique_name, 2, redis_server.url)
    lock = threading.Lock()
    inside = most = entries = 0
    redis_most = 0
    errors: list[BaseException] = []
    done = threading.Event()

    def worker() -> None:
        nonlocal inside, most, entries
        try:
            for _ in range(10):
                with sem:
                    with lock:
                        inside += 1
                        entries += 1
                        most = max(most, inside)
                    time.sleep(0.005)
                    with lock:
                        inside -= 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    def watch() -> None:
        # A second view from outside the threads: the holders Redis knows.
        nonlocal redis_most
        try:
            while not done.is_set():
                redis_most = max(redis_most, sem.state().holders)
        except BaseException as exc:  # reported below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    watcher.join(timeout=10)

    assert not errors
    assert not any(t.is_alive() for t in threads)
    assert entries == 60
    assert most == 2  # both permits were used, and never a third
    assert 1 <= redis_most <= 2
    assert sem.state() == (2, 0, 0)


def test_a_thread_waits_for_a_permit_held_by_another(
    redis_server: Any, unique_name: str
) -> None:
    sem = RedisSemaphore(unique_name, 1, redis_server.url)
    entered = threading.Event()
    order: list[str] = []

    def late() -> None:
        with sem:
            order.append("late")

    with sem:
        t = threading.Thread(target=late)
        t.start()
        # The late thread queues behind us and stays out while we hold.
        deadline = time.monotonic() + 5
        while sem.state().waiters == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sem.state() == (1, 1, 1)
        order.append("first")
        entered.set()
    t.join(timeout=10)
    assert order == ["first", "late"]
    assert sem.state() == (1, 0, 0)
