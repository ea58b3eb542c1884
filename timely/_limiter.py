"""What both limiters share: the lazily made Go limiter, and acquisition
from asyncio tasks or from threads."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import _bridge, _validate
from ._errors import RedisConnectionError

logger = logging.getLogger("timely")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
E = TypeVar("E")


class Limiter(Generic[S, E]):
    """Base of the limiters, whose state reads as an ``S`` and whose entry
    gives an ``E``; not public.

    The Go limiter is made on first use in each process, so constructing a
    limiter does no I/O and survives a fork that happens before first use.
    """

    __slots__ = (
        "_name",
        "_capacity",
        "_redis_url",
        "_max_sleep",
        "_max_sleep_us",
        "_fail_open",
        "_handle",
        "_handle_pid",
        "_lock",
    )

    def __init__(
        self, name: Any, capacity: Any, redis_url: Any, max_sleep: Any, fail_open: Any
    ) -> None:
        self._name = _validate.name(name)
        self._capacity = _validate.count("capacity", capacity)
        self._redis_url = _validate.redis_url(redis_url)
        self._max_sleep = _validate.max_sleep(max_sleep)
        # As the Go core takes it: microseconds, -1 without limit.
        self._max_sleep_us = (
            -1 if self._max_sleep is None else round(self._max_sleep * 1_000_000)
        )
        self._fail_open = _validate.flag("fail_open", fail_open)
        self._handle: int | None = None
        self._handle_pid = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Which shared limiter this is: processes that use the same name
        on the same Redis share one limiter."""
        return self._name

    @property
    def capacity(self) -> int:
        """The most holders (semaphore) or tokens (token bucket) at once."""
        return self._capacity

    @property
    def redis_url(self) -> str:
        """The Redis URL, with any password replaced by ``***``."""
        return _validate.redact(self._redis_url)

    @property
    def max_sleep(self) -> float | None:
        """The longest wait in seconds; ``None`` waits forever."""
        return self._max_sleep

    @property
    def fail_open(self) -> bool:
        """Whether work goes through, unlimited, when Redis is unreachable."""
        return self._fail_open

    def _make(self) -> int:
        raise NotImplementedError

    def _failed_open(self, err: RedisConnectionError) -> int:
        """Let the work through without a permit, or re-raise."""
        if not self._fail_open:
            raise err
        logger.warning(
            "%r: Redis is unreachable (%s); failing open: the work goes "
            "through without limit",
            self,
            err,
        )
        return 0

    def state(self) -> S:
        """Read the limiter's state in Redis (one round trip, blocking)."""
        raise NotImplementedError

    async def astate(self) -> S:
        """Read the limiter's state without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.state)

    # Entering acquires here, then hands the operation to _entered, which
    # each limiter defines; the exit gives nothing back unless the limiter
    # says otherwise.
    def _entered(self, op: int, key: object) -> E:
        """What ``async with``/``with`` gives for the acquisition ``op`` (0
        when failing open), made by the task or thread ``key``."""
        raise NotImplementedError

    async def __aenter__(self) -> E:
        # The hot path of every ``async with``, kept to one coroutine and
        # few calls.
        loop = asyncio.get_running_loop()
        try:
            h = self._handle
            if h is None or self._handle_pid != _bridge.pid:
                h = self._limiter()
            n = _bridge.notifier(loop)
            wait = n.sync_wait_us()  # 0 while others of this loop wait
            if wait:
                started = time.perf_counter()
                op = _bridge.fast("gobridge_Acquire", h, n.id, self._max_sleep_us, wait)
                n.spent(started)
            else:
                op = _bridge.fast("gobridge_Acquire", h, n.id, self._max_sleep_us, 0)
            if op < 0:
                op = -op
            else:
                fut = n.expect(op)
                try:
                    await fut
                except asyncio.CancelledError:
                    # Whatever the Go side reached (queued, granted, token
                    # promised), Cancel undoes it: no permit can leak from
                    # a canceled task.
                    _bridge.call("Cancel", op)
                    raise
        except RedisConnectionError as err:
            op = self._failed_open(err)
        return self._entered(op, asyncio.current_task(loop))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __enter__(self) -> E:
        try:
            op = self._acquire_sync()
        except RedisConnectionError as err:
            op = self._failed_open(err)
        return self._entered(op, threading.get_ident())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Use the limiter as a decorator: every call of ``fn`` runs inside
        the limiter, as if its body were wrapped in ``async with limiter:``
        (a coroutine function) or ``with limiter:`` (a plain function, which
        then blocks its thread while it waits).

        :raises TypeError: ``fn`` is not callable, or is a generator or
            async generator function, whose body would run after the call
            returned, outside the limiter.
        """
        if not callable(fn):
            raise TypeError(f"a limiter decorates a function, not {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"cannot decorate the generator function {fn!r}: its body runs "
                "after the call returns, outside the limiter; use `with` or "
                "`async with` inside it instead"
            )
        if inspect.iscoroutinefunction(fn):
            coro: Callable[P, Awaitable[Any]] = fn

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await coro(*args, **kwargs)

            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self:
                return fn(*args, **kwargs)

        return guarded

    def _limiter(self) -> int:
        """The handle of this process's Go limiter, made on first use."""
        h = self._handle
        if h is not None and self._handle_pid == _bridge.pid:
            return h
        with self._lock:
            if self._handle is None or self._handle_pid != _bridge.pid:
                _bridge.core()  # refuses a forked child of a process that used it
                self._handle, self._handle_pid = self._make(), _bridge.pid
            return self._handle

    def _acquire_sync(self) -> int:
        """Acquire from a thread, blocking it (not the GIL); return the
        operation id."""
        h = self._limiter()
        # Like an event loop's first call, a thread that waits anyway lets
        # the Go core run an uncontended round in this thread.
        op: int = _bridge.call(
            "Acquire", h, 0, self._max_sleep_us, _bridge.Notifier.SYNC_WAIT_US
        )
        if op < 0:
            return -op
        try:
            # Short slices keep KeyboardInterrupt deliverable.
            while not _bridge.call("Wait", op, 100):
                pass
        except BaseException:
            _bridge.call("Cancel", op)
            raise
        return op

    def close(self) -> None:
        """Close this process's Go limiter: waiters fail with
        ``LimiterClosedError`` and held permits are released. The limiter
        can be used again afterwards, with a new Go limiter."""
        with self._lock:
            h, self._handle = self._handle, None
            if h is not None and self._handle_pid == _bridge.pid:
                _bridge.call("CloseLimiter", h)
