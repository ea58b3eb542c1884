"""Argument checks shared by the limiters: each raises ``TypeError`` or
``ValueError`` naming the argument and showing the value, before any I/O."""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import SplitResult, urlsplit

DEFAULT_URL = "redis://localhost:6379"

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel", "memory")


def name(value: Any) -> str:
    """A limiter name: a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"name must be a str, not {type(value).__name__} ({value!r})")
    if not value:
        raise ValueError("name must not be empty")
    return value


def count(arg: str, value: Any, minimum: int = 1) -> int:
    """A whole number of permits or tokens, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, not {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{arg} must be >= {minimum}, not {value!r}")
    return value


def seconds(arg: str, value: Any, minimum: float = 0.0, strict: bool = True) -> float:
    """A finite time in seconds, above ``minimum`` (or equal if not strict)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{arg} must be a number of seconds, not {type(value).__name__} ({value!r})"
        )
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{arg} must be finite, not {value!r}")
    if v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{arg} must be {op} {minimum:g} seconds, not {value!r}")
    return v


def flag(arg: str, value: Any) -> bool:
    """A bool, and only a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, not {type(value).__name__} ({value!r})")
    return value


def max_sleep(value: Any) -> float | None:
    """``None`` (wait forever) or a finite number of seconds >= 0."""
    if value is None:
        return None
    return seconds("max_sleep", value, 0.0, strict=False)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def redis_url(value: Any) -> str:
    """A Redis URL of a supported form; ``None`` reads ``$TIMELY_REDIS_URL``."""
    if value is None:
        value = os.environ.get("TIMELY_REDIS_URL") or DEFAULT_URL
    if not isinstance(value, str):
        raise TypeError(
            f"redis_url must be a str, not {type(value).__name__} ({value!r})"
        )
    shown = redact(value)
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"redis_url {shown!r} is malformed: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"redis_url {shown!r} has an unsupported scheme {parts.scheme!r}; "
            f"use one of {', '.join(s + '://' for s in _SCHEMES)}"
        )
    if parts.scheme in ("redis", "rediss"):
        _check_host(parts, shown)
    elif parts.scheme == "unix" and not parts.path:
        raise ValueError(f"redis_url {shown!r} names no socket path")
    elif parts.scheme == "memory" and (parts.path.strip("/") or parts.query):
        raise ValueError(f"redis_url {shown!r}: memory:// takes only a name, as memory://name")
    return value


def _check_host(parts: SplitResult, shown: str) -> None:
    if not parts.hostname:
        raise ValueError(f"redis_url {shown!r} names no host")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"redis_url {shown!r} has a port outside 1..65535")
    db = parts.path.strip("/")
    if db and not (db.isdigit() and int(db) >= 0):
        raise ValueError(f"redis_url {shown!r} has a db {db!r} that is not a number")
