"""The one door to the Go core: loading it, mapping its errors, and
collecting its completions on an asyncio event loop.

The Go module is loaded on first use, not at import, so that a process can
import timely and build limiters before it forks. Go never calls into
Python: completed operations make an eventfd readable, which the event loop
watches, and their outcomes are collected in one call.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import threading
import time
from types import ModuleType
from typing import Any, Protocol

from ._errors import (
    ForkedProcessError,
    LeaseLostError,
    LimiterClosedError,
    MaxSleepExceededError,
    RedisConnectionError,
    TimelyError,
)

logger = logging.getLogger("timely")

_lock = threading.Lock()
_module: ModuleType | None = None
_module_pid = 0
# The generated C functions behind the module's Python wrappers: the hot
# paths (acquire, release, collect) call them directly.
_c: Any = None

# This process's id, kept current across os.fork() by a hook, so that the
# hot paths check for a fork without a system call.
pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)

_KINDS: dict[str, type[Exception]] = {
    "maxsleep": MaxSleepExceededError,
    "connection": RedisConnectionError,
    "leaselost": LeaseLostError,
    "closed": LimiterClosedError,
    "forked": ForkedProcessError,
    "value": ValueError,
}

_ERROR = re.compile(r"^\[(\w+)\] (.*)$", re.DOTALL)


def core() -> ModuleType:
    """Return the Go module, loading it on first use in this process."""
    global _module, _module_pid, _c
    if _module is not None:
        if _module_pid != pid:
            raise ForkedProcessError(
                "timely's Go core was started in the parent process and cannot "
                "run in this forked child; create and first use limiters after "
                "the fork, or use the 'spawn' or 'forkserver' start methods"
            )
        return _module
    with _lock:
        if _module is None:
            from ._native import _gobridge, gobridge  # type: ignore[attr-defined]

            _module, _module_pid, _c = gobridge, pid, _gobridge
            atexit.register(_settle_at_exit)
    return _module


# How long an exiting interpreter waits for the releases still on their way
# to Redis; past it, those permits come back when their leases expire.
SETTLE_AT_EXIT_MS = 1000


def _settle_at_exit() -> None:
    """Let the releases sent in the background reach Redis before exit."""
    if _module is None or _module_pid != pid:
        return
    try:
        _module.Flush(SETTLE_AT_EXIT_MS)
    except Exception:  # noqa: BLE001 - exiting: never raise from atexit
        logger.debug("timely: settling releases at exit failed", exc_info=True)


def error(kind: str, message: str) -> Exception:
    """Map an error of the Go core to its exception."""
    cls = _KINDS.get(kind)
    if cls is None:
        return TimelyError(message)
    return cls(message)


def translate(exc: RuntimeError) -> Exception:
    """Map a RuntimeError raised by a Go call to timely's exception."""
    m = _ERROR.match(str(exc))
    if m is None:
        return TimelyError(str(exc))
    return error(m.group(1), m.group(2))


def call(fn: str, *args: Any) -> Any:
    """Call the Go function ``fn``, raising timely's exceptions."""
    try:
        return getattr(core(), fn)(*args)
    except RuntimeError as exc:
        raise translate(exc) from None
    finally:
        if time.monotonic() >= _next_drain:
            drain_logs()


# The hot paths: the calls every acquisition and release makes. They call
# the generated C functions without call()'s lookup by name, and must only
# run once the module is loaded in this process, as it is once a limiter's
# handle exists.


def fast(fn: str, *args: int) -> int:
    """Call the generated C function ``fn`` (``gobridge_Acquire``, ...),
    raising timely's exceptions: call() for the hot paths."""
    try:
        result: int = getattr(_c, fn)(*args)
    except RuntimeError as exc:
        raise translate(exc) from None
    finally:
        if time.monotonic() >= _next_drain:
            drain_logs()
    return result


_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
}


# Calls drain the Go core's log buffer at most every LOG_DRAIN_S seconds
# (reading it is a call into Go of its own); collecting an event loop's
# completions drains it whenever Go says records wait.
LOG_DRAIN_S = 0.05
_next_drain = 0.0


def drain_logs() -> None:
    """Pass the Go core's buffered log records to the ``timely`` logger."""
    global _next_drain
    if _module is None or _module_pid != pid:
        return
    _next_drain = time.monotonic() + LOG_DRAIN_S
    text = _module.Logs()
    if not text:
        return
    for line in text.split("\n"):
        level, _, message = line.partition("\t")
        logger.log(_LEVELS.get(level, logging.WARNING), "%s", message)


class Settles(Protocol):
    """What waits for an operation's answer without a future: a permit
    whose release was sent in the background."""

    def _settle(self, err: Exception | None) -> None: ...


class Notifier:
    """Delivers the Go core's completions to futures on one event loop."""

    __slots__ = ("id", "fd", "loop", "futures", "releases", "_spent_us", "_kicks")

    # How long one call per loop iteration may wait for Redis's answer in
    # the calling thread, in microseconds. An uncontended acquisition then
    # completes in that call, without a trip through the descriptor; all
    # other calls of the iteration return at once and are batched in Go, so
    # the loop is never held for longer than this per iteration. While
    # other operations of this loop are pending the limiter is contended:
    # a call waiting in the thread would then keep the tasks behind it from
    # joining the next batch, so every call returns at once.
    SYNC_WAIT_US = 1000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.id: int = call("NewNotifier")
        self.fd: int = call("NotifierFD", self.id)
        self.loop = loop
        self.futures: dict[int, asyncio.Future[None]] = {}
        self.releases: dict[int, Settles] = {}  # no task waits for these
        self._spent_us: float | None = None  # None: no call this iteration
        self._kicks: set[int] = set()  # limiters with deferred releases
        loop.add_reader(self.fd, self._readable)

    def sync_wait_us(self) -> int:
        """The wait the next call may spend in the calling thread: what is
        left of this loop iteration's budget of SYNC_WAIT_US, when no
        operation of this loop is pending (they would miss a batch), else 0.
        Charge what the call took with :meth:`spent`."""
        if self.futures:
            return 0
        if self._spent_us is None:  # the first call of this iteration
            self._spent_us = 0.0
            self.loop.call_soon(self._end_turn)
        return max(0, int(self.SYNC_WAIT_US - self._spent_us))

    def spent(self, started: float) -> None:
        """Charge the time since ``started`` (``time.perf_counter()``) to
        this iteration's budget."""
        if self._spent_us is not None:
            self._spent_us += (time.perf_counter() - started) * 1e6

    def _end_turn(self) -> None:
        self._spent_us = None

    def kick_soon(self, handle: int | None) -> None:
        """Start a round of limiter ``handle`` for its deferred releases
        once the callbacks ready in this turn of the loop have run."""
        if handle is None:
            return
        if not self._kicks:
            self.loop.call_soon(self._kick)
        self._kicks.add(handle)

    def _kick(self) -> None:
        kicks, self._kicks = self._kicks, set()
        for handle in kicks:
            fast("gobridge_Kick", handle)

    def expect(self, op: int) -> asyncio.Future[None]:
        """Return a future that completes with operation ``op``."""
        fut = self.loop.create_future()
        self.futures[op] = fut
        return fut

    def _readable(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.collect()

    def collect(self) -> None:
        """Take in every completion the Go core has for this loop, and the
        log records waiting, if any. Call it on the loop's thread."""
        try:
            text: str = _c.gobridge_Collect(self.id)
        except RuntimeError as exc:
            raise translate(exc) from None
        if not text:
            return
        for line in text.split("\n"):
            if line == "logs":  # always the last line
                drain_logs()
                break
            head, _, rest = line.partition(" ")
            op = int(head)
            err: Exception | None = None
            if rest != "ok":
                kind, _, message = rest.partition(" ")
                err = error(kind, message)
            fut = self.futures.pop(op, None)
            if fut is None:
                settles = self.releases.pop(op, None)
                if settles is not None:
                    settles._settle(err)
            elif fut.done():
                pass
            elif err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)

    def close(self) -> None:
        """Stop watching the descriptor and close it."""
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)
        if _module is not None and _module_pid == pid:
            _module.CloseNotifier(self.id)


_notifiers: dict[int, Notifier] = {}
_last: Notifier | None = None  # the one found last: usually the next one too


def notifier(loop: asyncio.AbstractEventLoop | None = None) -> Notifier:
    """Return the notifier of ``loop`` (default: the running event loop),
    creating it once; call it on that loop's thread.

    Notifiers of loops that have closed since are closed here, so that each
    event loop of a program costs one descriptor while it lives.
    """
    global _last
    if loop is None:
        loop = asyncio.get_running_loop()
    n = _last
    if n is not None and n.loop is loop:
        return n
    n = _notifiers.get(id(loop))
    if n is not None and n.loop is loop:
        _last = n
        return n
    for key, old in list(_notifiers.items()):
        if old.loop.is_closed():
            old.close()
            del _notifiers[key]
    n = Notifier(loop)
    _notifiers[id(loop)] = n
    _last = n
    return n
