"""RedisSemaphore: at most ``capacity`` holders at once, across processes."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import NamedTuple

from . import _bridge, _validate
from ._errors import LeaseLostError, TimelyError
from ._limiter import Limiter

logger = logging.getLogger("timely")


class SemaphoreState(NamedTuple):
    """A snapshot of a semaphore across all processes."""

    capacity: int
    """The capacity last given by an acquiring process (0: no state yet)."""
    holders: int
    """Permits held now."""
    waiters: int
    """Acquisitions waiting in the queue."""


class Permit:
    """The permit of one entry into a :class:`RedisSemaphore`, as given by
    ``async with semaphore as permit`` (or ``with``).

    A permit is a lease that the Go core renews while it is held. If this
    process stops renewing it for longer than ``expiry`` (it was frozen, or
    Redis was unreachable or lost its data), Redis lets the permit go to
    another holder: :attr:`lost` turns true, a warning is logged under the
    ``timely`` logger, and the release at exit adds no capacity.
    """

    __slots__ = ("_op", "_sem", "_lost", "_notifier")

    def __init__(self, op: int, sem: RedisSemaphore) -> None:
        self._op = op
        self._sem = sem
        self._lost: bool | None = None  # known for good once released
        # Set while the answer to an ``async with`` release is on its way.
        self._notifier: _bridge.Notifier | None = None

    @property
    def lost(self) -> bool:
        """Whether the lease was found expired while held. Work guarded by
        a lost permit may run alongside another holder's: stop it.

        After ``async with`` exits, the release is still on its way to
        Redis for a moment; if Redis then finds the lease gone, ``lost``
        turns true (read on the event loop, it takes in every answer
        already come)."""
        n = self._notifier
        if n is not None and _running_loop() is n.loop:
            n.collect()
        if self._lost is not None:
            return self._lost
        if not self._op:
            return False  # failed open: there is no lease to lose
        return bool(_bridge.call("PermitLost", self._op))

    def _settle(self, err: Exception | None) -> None:
        """Take in the answer to the release sent by ``async with``."""
        self._notifier = None
        if err is not None:
            self._sem._release_failed(self, err)

    def __repr__(self) -> str:
        state = "released" if self._lost is False else "lost" if self._lost else "held"
        return f"<timely.Permit {self._op} {state}>"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RedisSemaphore(Limiter[SemaphoreState, Permit]):
    """A distributed, fair semaphore: at most ``capacity`` holders at once
    among all processes that use the same ``name`` on the same Redis.

    Use it with ``async with`` from tasks or ``with`` from threads; one
    instance may be entered any number of times at once, and each exit
    releases exactly the permit its entry acquired. Entering gives a
    :class:`Permit` (``async with sem as permit``), whose ``lost`` tells
    whether its lease ran out while held. Waiters are served in
    the order they asked, across processes. Each permit is a lease that the
    Go core renews while it is held; a process that dies, is killed or
    freezes loses its permits after ``expiry`` seconds.

    :param name: which shared semaphore this is.
    :param capacity: the most holders at once, an int >= 1.
    :param redis_url: where the state lives; default ``$TIMELY_REDIS_URL``,
        else ``redis://localhost:6379``.
    :param max_sleep: the longest wait, in seconds; ``None`` waits forever,
        ``0`` takes only a permit free at once. Past it,
        ``MaxSleepExceededError`` is raised and nothing is held.
    :param expiry: seconds after which a permit that its process stopped
        renewing returns to the pool; at least 0.1.
    :param fail_open: when Redis cannot be reached, let the work through
        without a permit (logging a warning) instead of raising
        ``RedisConnectionError``. Off by default.
    """

    __slots__ = ("_expiry", "_held")

    def __init__(
        self,
        name: str,
        capacity: int,
        redis_url: str | None = None,
        *,
        max_sleep: float | None = None,
        expiry: float = 10,
        fail_open: bool = False,
    ) -> None:
        super().__init__(name, capacity, redis_url, max_sleep, fail_open)
        self._expiry = _validate.seconds("expiry", expiry)
        if self._expiry < 0.1:
            raise ValueError(f"expiry must be >= 0.1 seconds, not {expiry!r}")
        # Permits held through this instance, per task or thread, so that
        # each exit releases the permit of its own entry: one Permit, or a
        # list of them, innermost last, when entries nest.
        self._held: dict[object, Permit | list[Permit]] = {}

    @property
    def expiry(self) -> float:
        """Seconds after which an unrenewed permit returns to the pool."""
        return self._expiry

    def __repr__(self) -> str:
        return (
            f"RedisSemaphore(name={self._name!r}, capacity={self._capacity}, "
            f"redis_url={self.redis_url!r}, max_sleep={self._max_sleep!r}, "
            f"expiry={self._expiry!r}, fail_open={self._fail_open!r})"
        )

    def _make(self) -> int:
        h: int = _bridge.call(
            "NewSemaphore",
            self._redis_url,
            self._name,
            self._capacity,
            round(self._expiry * 1000),
        )
        return h

    def _entered(self, op: int, key: object) -> Permit:
        permit = Permit(op, self)
        self._push(key, permit)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        permit = self._pop(asyncio.current_task(loop))
        if not permit._op:
            return  # entered by failing open: nothing to release
        # The release goes to Redis in the background, in the dispatcher's
        # next round: started by the next acquisition, if this turn of the
        # loop makes one (a task that leaves and enters again pays one
        # round trip, not two), else by the kick at the end of the turn.
        # Nothing here waits for it. Its answer comes through the loop's
        # notifier: a lease found gone makes permit.lost true and logs a
        # warning.
        n = _bridge.notifier(loop)
        try:
            rid = _bridge.fast("gobridge_ReleaseDeferred", permit._op, n.id)
        except TimelyError as err:
            self._release_failed(permit, err)
            return
        n.kick_soon(self._handle)
        permit._lost = False
        if rid:
            permit._notifier = n
            n.releases[rid] = permit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit = self._pop(threading.get_ident())
        if not permit._op:
            return  # entered by failing open: nothing to release
        try:
            # The thread waits anyway: the Go core may run the round in it.
            rid: int = _bridge.call(
                "Release", permit._op, 0, _bridge.Notifier.SYNC_WAIT_US
            )
            while rid and not _bridge.call("Wait", rid, 100):
                pass
            permit._lost = False
        except TimelyError as err:
            self._release_failed(permit, err)

    def _push(self, key: object, permit: Permit) -> None:
        held = self._held.get(key)
        if held is None:
            self._held[key] = permit
        elif isinstance(held, list):
            held.append(permit)
        else:
            self._held[key] = [held, permit]

    def _pop(self, key: object) -> Permit:
        held = self._held.pop(key, None)
        if held is None:
            raise RuntimeError(f"{self!r} released more times than it was acquired")
        if not isinstance(held, list):
            return held
        permit = held.pop()
        self._held[key] = held[0] if len(held) == 1 else held
        return permit

    def _release_failed(self, permit: Permit, err: Exception) -> None:
        # The work already ran: a release failure must not turn it into an
        # error. A lease that is not released expires on its own.
        if isinstance(err, LeaseLostError):
            permit._lost = True
            logger.warning(
                "semaphore %r: the permit's lease had expired before release; "
                "another holder may have been admitted meanwhile",
                self._name,
            )
        else:
            logger.warning(
                "semaphore %r: release failed (%s); the permit returns when its "
                "lease expires",
                self._name,
                err,
            )

    def state(self) -> SemaphoreState:
        """Read the semaphore's state in Redis (one round trip, blocking)."""
        text: str = _bridge.call("SemaphoreState", self._limiter())
        capacity, holders, waiters = (int(x) for x in text.split())
        return SemaphoreState(capacity, holders, waiters)


