"""Argument checks shared by the limiters: each raises ``TypeError`` or
``ValueError`` naming the argument and showing the value, before any I/O."""

from __future__ import annotations

import math
import os
import re
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

DEFAULT_URL = "redis://localhost:6379"

_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "memory",
)

TLS_FILE_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
"""Query parameters of timely's own (read by the Go core, not go-redis)
naming the CA file and the client certificate and key of a TLS URL."""

# Query parameters that a multi-host form spells elsewhere in the URL.
_REFUSED = {
    "cluster": {
        "addr": "the addresses go in the host part, separated by commas",
        "db": "a cluster has only db 0",
    },
    "sentinel": {
        "addr": "the addresses go in the host part, separated by commas",
        "master_name": "the service name goes in the path",
        "username": "the user goes before the host, as user:password@",
        "password": "the password goes before the host, as user:password@",
        "db": "the db goes in the path, after the service name",
    },
}

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[&;])[^=&;]*password[^=&;]*=)[^&;]*")


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
    """The URL with any password, in the user part or in a query parameter
    whose name mentions a password, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    shown = parts
    if _QUERY_PASSWORD.search(parts.query):
        shown = shown._replace(query=_QUERY_PASSWORD.sub(r"\1***", parts.query))
    user, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in user:
        shown = shown._replace(netloc=f"{user.split(':', 1)[0]}:***@{hosts}")
    # geturl() would drop an empty host (memory://), so only a URL that
    # shows a password is rebuilt.
    return url if shown is parts else shown.geturl()


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
    elif parts.scheme.endswith("+cluster"):
        _check_hosts(parts, shown)
        if parts.path.strip("/"):
            raise ValueError(
                f"redis_url {shown!r} has a path; a cluster URL has none "
                "(a cluster has only db 0)"
            )
    elif parts.scheme.endswith("+sentinel"):
        _check_hosts(parts, shown)
        _check_service(parts, shown)
    elif parts.scheme == "memory" and (
        parts.path.strip("/") or parts.query or "@" in parts.netloc
    ):
        raise ValueError(
            f"redis_url {shown!r}: memory:// takes only a name, as memory://name"
        )
    _check_query(parts, shown)
    return value


def _check_hosts(parts: SplitResult, shown: str) -> None:
    """Each address of a multi-host URL is host:port, the port in 1..65535."""
    addrs = parts.netloc.rpartition("@")[2].split(",")
    if len(addrs) > 1 and "[" in parts.netloc:
        raise ValueError(
            f"redis_url {shown!r}: IPv6 addresses cannot be listed with others; "
            "name one node, or use host names"
        )
    for addr in addrs:
        host, _, port = addr.rpartition(":")
        if not host.strip("[]") or not port.isdigit():
            raise ValueError(f"redis_url {shown!r}: address {addr!r} is not host:port")
        if not 1 <= int(port) <= 65535:
            raise ValueError(
                f"redis_url {shown!r}: port {port!r} is not in 1..65535"
            )


def _check_service(parts: SplitResult, shown: str) -> None:
    """A Sentinel URL's path is /service_name or /service_name/db."""
    path = parts.path.strip("/").split("/")
    if not path[0] or len(path) > 2:
        raise ValueError(
            f"redis_url {shown!r}: the path must be /service_name or "
            "/service_name/db"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"redis_url {shown!r} has a db {path[1]!r} that is not a number")


def _check_query(parts: SplitResult, shown: str) -> None:
    """Timely's own TLS parameters, and the parameters a form refuses.

    The other parameters are go-redis's options, which the Go core checks
    when the limiter is first used.
    """
    query = parse_qs(parts.query, keep_blank_values=True)
    form = parts.scheme.partition("+")[2]
    for param, where in _REFUSED.get(form, {}).items():
        if param in query:
            raise ValueError(
                f"redis_url {shown!r}: parameter {param} is not accepted here: {where}"
            )
    tls = parts.scheme.startswith("rediss")
    for param in TLS_FILE_PARAMS:
        if param not in query:
            continue
        if not tls:
            raise ValueError(
                f"redis_url {shown!r}: parameter {param} needs TLS: use rediss://, "
                "rediss+cluster:// or rediss+sentinel://"
            )
        if len(query[param]) != 1 or not query[param][0]:
            raise ValueError(
                f"redis_url {shown!r}: parameter {param} must name one file"
            )
    if ("ssl_certfile" in query) != ("ssl_keyfile" in query):
        raise ValueError(
            f"redis_url {shown!r}: parameters ssl_certfile and ssl_keyfile go "
            "together: a client certificate needs its key"
        )


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
