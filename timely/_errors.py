"""The exceptions of timely, all under :class:`TimelyError`."""

from __future__ import annotations

__all__ = [
    "TimelyError",
    "MaxSleepExceededError",
    "RedisConnectionError",
    "LeaseLostError",
    "LimiterClosedError",
    "ForkedProcessError",
]


class TimelyError(Exception):
    """Base class of every error timely raises, but for bad arguments."""


class MaxSleepExceededError(TimelyError):
    """The wait would pass ``max_sleep``; nothing was acquired or consumed."""


class RedisConnectionError(TimelyError, ConnectionError):
    """Redis could not be reached, or failed while running a script."""


class LeaseLostError(TimelyError):
    """A permit's lease expired in Redis before it was released."""


class LimiterClosedError(TimelyError):
    """The limiter was closed."""


class ForkedProcessError(TimelyError):
    """The Go core was started before a fork and cannot run in the child."""
