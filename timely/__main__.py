"""The ``timely`` command: ``python -m timely demo`` and ``bench``."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence

from . import RedisSemaphore, RedisTokenBucket, __version__


async def demo(redis_url: str, workers: int, out: "Progress") -> None:
    """Run both limiters side by side with simulated workers."""
    tag = f"demo-{random.randrange(1 << 30):x}"
    sem = RedisSemaphore(name=f"{tag}-sem", capacity=3, redis_url=redis_url)
    bucket = RedisTokenBucket(
        capacity=5,
        refill_frequency=0.5,
        refill_amount=5,
        name=f"{tag}-bucket",
        redis_url=redis_url,
    )
    inside = most = done = admitted = 0

    async def hold() -> None:
        nonlocal inside, most, done
        async with sem:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(random.uniform(0.2, 0.6))
            inside -= 1
        done += 1

    async def call_api() -> None:
        nonlocal admitted
        async with bucket:
            admitted += 1

    out.line(
        f"semaphore: {workers} workers share 3 permits; "
        f"token bucket: {3 * workers} calls at 5 per 0.5 s after a burst of 5"
    )
    start = time.monotonic()
    jobs = asyncio.gather(
        *(hold() for _ in range(workers)), *(call_api() for _ in range(3 * workers))
    )
    while not jobs.done():
        s, b = await sem.astate(), await bucket.astate()
        out.status(
            f"{time.monotonic() - start:5.1f}s  semaphore: {s.holders}/3 held, "
            f"{s.waiters} waiting, {done}/{workers} done | bucket: "
            f"{admitted}/{3 * workers} admitted, {b.tokens} tokens, "
            f"{b.waiting} waiting"
        )
        await asyncio.wait([jobs], timeout=0.2)
    await jobs
    elapsed = time.monotonic() - start
    out.line(
        f"done in {elapsed:.1f}s: at most {most} holders at once (capacity 3); "
        f"{admitted} calls admitted"
    )


class Progress:
    """Writes a status line that updates in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def status(self, text: str) -> None:
        if self.tty:
            print(f"\r{text}\033[K", end="", flush=True)
        elif time.monotonic() - self.last >= 0.5:
            self.last = time.monotonic()
            print(text, flush=True)

    def line(self, text: str) -> None:
        if self.tty:
            print("\r\033[K", end="")
        print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m timely`` and of the ``timely`` script."""
    parser = argparse.ArgumentParser(
        prog="timely", description="Distributed, async, fair rate limiters."
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser(
        "demo", help="show both limiters at work", description=demo.__doc__
    )
    d.add_argument(
        "--redis-url",
        default="memory://",
        help="where the state lives (default: memory://, embedded)",
    )
    d.add_argument(
        "--workers", type=int, default=12, help="simulated workers (default: 12)"
    )
    b = commands.add_parser(
        "bench",
        add_help=False,
        help="measure throughput, latency and resources (bench --help)",
    )
    b.add_argument("args", nargs=argparse.REMAINDER)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # bench parses its own options; REMAINDER would not pass on a first
        # argument that starts with "-", so it gets them untouched.
        from . import _bench

        return _bench.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.workers < 1:
            parser.error(f"--workers must be >= 1, not {args.workers}")
        asyncio.run(demo(args.redis_url, args.workers, Progress()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
