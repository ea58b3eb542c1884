"""Reading the limiters that a Redis holds, for ``timely inspect``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import _bridge, _validate


class LimiterInfo(NamedTuple):
    """One limiter found in Redis. Fields of the other kind are 0."""

    kind: str
    """``"semaphore"`` or ``"bucket"``."""
    name: str
    capacity: int
    """The capacity last written by a process using the limiter."""
    holders: int
    """Semaphore: permits held now."""
    waiters: int
    """Semaphore: acquisitions waiting in the queue."""
    expiry: float
    """Semaphore: the lease of a permit, in seconds."""
    tokens: int
    """Bucket: tokens available now."""
    waiting: int
    """Bucket: tokens of future refills already promised to waiters."""
    refill_amount: int
    """Bucket: tokens added at each refill."""
    refill_frequency: float
    """Bucket: seconds between refills."""


def limiters(redis_url: str | None, names: Sequence[str] = ()) -> list[LimiterInfo]:
    """Read the limiters stored in the Redis at ``redis_url``.

    With no ``names``, every limiter is found by SCAN over the ``timely:*``
    keys (on every master of a cluster); otherwise each name is looked up
    as a semaphore and as a token bucket. Limiters that have no state in
    Redis (never used, or expired) are left out. Read only; blocking.

    :param redis_url: as for the limiters; ``None`` reads
        ``$TIMELY_REDIS_URL``, else ``redis://localhost:6379``.
    :param names: limiter names to look up; empty for all.
    :raises RedisConnectionError: Redis could not be reached.
    """
    url = _validate.redis_url(redis_url)
    for n in names:
        _validate.name(n)
        if "\n" in n:
            raise ValueError(f"name must not contain a newline, not {n!r}")
    text: str = _bridge.call("Inspect", url, "\n".join(names))
    return [_info(d) for d in json.loads(text) or []]


def _info(d: dict[str, Any]) -> LimiterInfo:
    return LimiterInfo(
        kind=d["kind"],
        name=d["name"],
        capacity=d["capacity"],
        holders=d["holders"],
        waiters=d["waiters"],
        expiry=d["expiry_ms"] / 1000,
        tokens=d["tokens"],
        waiting=d["promised"],
        refill_amount=d["refill_amount"],
        refill_frequency=d["refill_period_us"] / 1_000_000,
    )
