"""Bad arguments: a TypeError or ValueError naming the argument and showing
the value, raised by the constructor before any I/O."""

from __future__ import annotations

import math
from typing import Any

import pytest

from timely import RedisSemaphore, RedisTokenBucket

SEM = {"name": "x", "capacity": 1}
NAN, INF = math.nan, math.inf

SEMAPHORE_CASES = [
    ({"capacity": 0}, ValueError, "capacity", "0"),
    ({"capacity": -3}, ValueError, "capacity", "-3"),
    ({"capacity": 1.5}, TypeError, "capacity", "1.5"),
    ({"capacity": True}, TypeError, "capacity", "True"),
    ({"capacity": "3"}, TypeError, "capacity", "'3'"),
    ({"capacity": None}, TypeError, "capacity", "None"),
    ({"name": ""}, ValueError, "name", ""),
    ({"name": 3}, TypeError, "name", "3"),
    ({"name": None}, TypeError, "name", "None"),
    ({"expiry": 0}, ValueError, "expiry", "0"),
    ({"expiry": -1}, ValueError, "expiry", "-1"),
    ({"expiry": 0.05}, ValueError, "expiry", "0.05"),
    ({"expiry": NAN}, ValueError, "expiry", "nan"),
    ({"expiry": INF}, ValueError, "expiry", "inf"),
    ({"expiry": "10"}, TypeError, "expiry", "'10'"),
    ({"max_sleep": -1}, ValueError, "max_sleep", "-1"),
    ({"max_sleep": INF}, ValueError, "max_sleep", "inf"),
    ({"max_sleep": NAN}, ValueError, "max_sleep", "nan"),
    ({"max_sleep": "1"}, TypeError, "max_sleep", "'1'"),
    ({"fail_open": 1}, TypeError, "fail_open", "1"),
    ({"redis_url": 6379}, TypeError, "redis_url", "6379"),
    ({"redis_url": "http://h:1"}, ValueError, "redis_url", "http"),
    ({"redis_url": "localhost:6379"}, ValueError, "redis_url", "localhost"),
    ({"redis_url": "redis://h:99999"}, ValueError, "redis_url", "99999"),
    ({"redis_url": "redis://h:0"}, ValueError, "redis_url", "h:0"),
    ({"redis_url": "redis://:6379"}, ValueError, "redis_url", ":6379"),
    ({"redis_url": "redis://h:1/db"}, ValueError, "redis_url", "db"),
    ({"redis_url": "unix://"}, ValueError, "redis_url", "unix"),
    ({"redis_url": "memory://x/y"}, ValueError, "redis_url", "memory://x/y"),
]


@pytest.mark.parametrize(("kwargs", "exc", "argument", "shown"), SEMAPHORE_CASES)
def test_semaphore_rejects(
    kwargs: dict[str, Any], exc: type[Exception], argument: str, shown: str
) -> None:
    with pytest.raises(exc) as info:
        RedisSemaphore(**{**SEM, **kwargs})
    assert argument in str(info.value)
    assert shown in str(info.value)


BUCKET_CASES = [
    ((0, 1, 1), {}, ValueError, "capacity", "0"),
    ((2.0, 1, 1), {}, TypeError, "capacity", "2.0"),
    ((5, 0, 1), {}, ValueError, "refill_frequency", "0"),
    ((5, -1.0, 1), {}, ValueError, "refill_frequency", "-1.0"),
    ((5, 0.0001, 1), {}, ValueError, "refill_frequency", "0.0001"),
    ((5, INF, 1), {}, ValueError, "refill_frequency", "inf"),
    ((5, NAN, 1), {}, ValueError, "refill_frequency", "nan"),
    ((5, "1", 1), {}, TypeError, "refill_frequency", "'1'"),
    ((5, 1, 6), {}, ValueError, "refill_amount", "6"),
    ((5, 1, 0), {}, ValueError, "refill_amount", "0"),
    ((5, 1, 1.0), {}, TypeError, "refill_amount", "1.0"),
    ((5, 1, False), {}, TypeError, "refill_amount", "False"),
    ((5, 1, 1), {"name": ""}, ValueError, "name", ""),
    ((5, 1, 1), {"name": b"x"}, TypeError, "name", "b'x'"),
    ((5, 1, 1), {"max_sleep": -0.5}, ValueError, "max_sleep", "-0.5"),
    ((5, 1, 1), {"fail_open": "yes"}, TypeError, "fail_open", "'yes'"),
    ((5, 1, 1), {"redis_url": "redis+cluster"}, ValueError, "redis_url", "cluster"),
]


@pytest.mark.parametrize(("args", "kwargs", "exc", "argument", "shown"), BUCKET_CASES)
def test_token_bucket_rejects(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: type[Exception],
    argument: str,
    shown: str,
) -> None:
    with pytest.raises(exc) as info:
        RedisTokenBucket(*args, **kwargs)
    assert argument in str(info.value)
    assert shown in str(info.value)


def test_bad_url_error_hides_the_password() -> None:
    with pytest.raises(ValueError) as info:
        RedisSemaphore("x", 1, "redis://user:hunter2@h:99999")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
