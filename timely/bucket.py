"""RedisTokenBucket: at most ``capacity`` acquisitions in a burst, refilled
by ``refill_amount`` tokens every ``refill_frequency`` seconds."""

from __future__ import annotations

from typing import NamedTuple

from . import _bridge, _validate
from ._limiter import Limiter


class TokenBucketState(NamedTuple):
    """A snapshot of a token bucket across all processes."""

    tokens: int
    """Tokens available now."""
    waiting: int
    """Tokens of future refills already promised to waiting acquisitions."""


class RedisTokenBucket(Limiter[TokenBucketState, "RedisTokenBucket"]):
    """A distributed, fair token bucket shared by all processes that use
    the same ``name`` on the same Redis.

    The bucket starts full with ``capacity`` tokens and gains
    ``refill_amount`` tokens every ``refill_frequency`` seconds, never above
    ``capacity``; each entry takes one token, and the exit gives nothing
    back. Waiters are served in the order they asked, across processes:
    each reserves its token on arrival, then sleeps on a Go timer until the
    token is due.

    :param capacity: the most tokens the bucket holds, an int >= 1.
    :param refill_frequency: seconds between refills, finite and > 0.
    :param refill_amount: tokens added at each refill, 1..capacity.
    :param name: which shared bucket this is; default ``"default"``.
    :param redis_url: where the state lives; default ``$TIMELY_REDIS_URL``,
        else ``redis://localhost:6379``.
    :param max_sleep: the longest wait, in seconds; ``None`` waits forever,
        ``0`` takes only a token available at once. A wait that would be
        longer raises ``MaxSleepExceededError`` at once, consuming nothing.
    :param fail_open: when Redis cannot be reached, let the work through
        (logging a warning) instead of raising ``RedisConnectionError``.
        Off by default.
    """

    __slots__ = ("_refill_frequency", "_refill_amount")

    def __init__(
        self,
        capacity: int,
        refill_frequency: float,
        refill_amount: int,
        redis_url: str | None = None,
        *,
        name: str = "default",
        max_sleep: float | None = None,
        fail_open: bool = False,
    ) -> None:
        super().__init__(name, capacity, redis_url, max_sleep, fail_open)
        self._refill_frequency = _validate.seconds("refill_frequency", refill_frequency)
        if self._refill_frequency < 0.001:
            raise ValueError(
                f"refill_frequency must be >= 0.001 seconds, not {refill_frequency!r}"
            )
        self._refill_amount = _validate.count("refill_amount", refill_amount)
        if self._refill_amount > self._capacity:
            raise ValueError(
                f"refill_amount ({refill_amount!r}) must not exceed capacity "
                f"({capacity!r})"
            )

    @property
    def refill_frequency(self) -> float:
        """Seconds between refills."""
        return self._refill_frequency

    @property
    def refill_amount(self) -> int:
        """Tokens added at each refill."""
        return self._refill_amount

    def __repr__(self) -> str:
        return (
            f"RedisTokenBucket(capacity={self._capacity}, "
            f"refill_frequency={self._refill_frequency!r}, "
            f"refill_amount={self._refill_amount}, name={self._name!r}, "
            f"redis_url={self.redis_url!r}, max_sleep={self._max_sleep!r}, "
            f"fail_open={self._fail_open!r})"
        )

    def _make(self) -> int:
        h: int = _bridge.call(
            "NewTokenBucket",
            self._redis_url,
            self._name,
            self._capacity,
            self._refill_amount,
            round(self._refill_frequency * 1_000_000),
        )
        return h

    def _entered(self, op: int, key: object) -> RedisTokenBucket:
        return self  # a token is spent: nothing to give back at exit

    def state(self) -> TokenBucketState:
        """Read the bucket's state in Redis (one round trip, blocking)."""
        text: str = _bridge.call("BucketState", self._limiter())
        tokens, waiting = (int(x) for x in text.split())
        return TokenBucketState(tokens, waiting)
