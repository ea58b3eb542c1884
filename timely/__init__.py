"""timely: distributed, async, fair rate limiters shared through Redis.

- :class:`RedisSemaphore`: at most ``capacity`` holders at once.
- :class:`RedisTokenBucket`: at most ``capacity`` acquisitions in a burst,
  refilled by ``refill_amount`` tokens every ``refill_frequency`` seconds.

The core is Go; waiting happens on goroutines, outside the GIL, and never
blocks the event loop. Importing timely does not load the Go core: it is
loaded on first use.
"""

import logging

from ._errors import (
    ForkedProcessError,
    LeaseLostError,
    LimiterClosedError,
    MaxSleepExceededError,
    RedisConnectionError,
    TimelyError,
)
from .bucket import RedisTokenBucket, TokenBucketState
from .semaphore import Permit, RedisSemaphore, SemaphoreState

__version__ = "0.1.0"

# Silent by default: records go nowhere until the application configures
# logging (and never to the last-resort stderr handler).
logging.getLogger("timely").addHandler(logging.NullHandler())

__all__ = [
    "RedisSemaphore",
    "RedisTokenBucket",
    "Permit",
    "SemaphoreState",
    "TokenBucketState",
    "TimelyError",
    "MaxSleepExceededError",
    "RedisConnectionError",
    "LeaseLostError",
    "LimiterClosedError",
    "ForkedProcessError",
]
