"""The ``timely`` command (also ``python -m timely``): ``demo`` shows both
limiters at work, ``inspect`` reads the limiters that a Redis holds, and
``bench`` runs the benchmark suite."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence

from . import RedisSemaphore, RedisTokenBucket, TimelyError, __version__
from ._inspect import LimiterInfo, limiters


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


def inspect(redis_url: str | None, names: Sequence[str], as_json: bool) -> int:
    """Show the limiters that a Redis holds: capacity, holders and waiters
    of each semaphore, tokens and waiting acquisitions of each token bucket.
    Without names, every limiter is found by SCAN over the timely:* keys
    (on every master of a cluster). Reads only."""
    found = limiters(redis_url, names)
    if as_json:
        print(json.dumps([info._asdict() for info in found], indent=2))
    elif found:
        print(format_limiters(found))
    else:
        print("no limiters found" + (" with these names" if names else ""))
    missing = sorted(set(names) - {info.name for info in found})
    for name in missing:
        print(f"timely inspect: no limiter named {name!r}", file=sys.stderr)
    return 1 if missing else 0


def format_limiters(found: Sequence[LimiterInfo]) -> str:
    """A table of limiters, one a line, with a header."""
    rows = [("KIND", "NAME", "CAPACITY", "HOLDERS", "TOKENS", "WAITING", "SETTINGS")]
    for i in found:
        if i.kind == "semaphore":
            rows.append(
                (
                    i.kind,
                    i.name,
                    str(i.capacity),
                    str(i.holders),
                    "-",
                    str(i.waiters),
                    f"expiry {i.expiry:g}s",
                )
            )
        else:
            rows.append(
                (
                    i.kind,
                    i.name,
                    str(i.capacity),
                    "-",
                    str(i.tokens),
                    str(i.waiting),
                    f"refill {i.refill_amount} every {i.refill_frequency:g}s",
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    numeric = {2, 3, 4, 5}
    return "\n".join(
        "  ".join(
            cell.rjust(w) if c in numeric else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    )


def bench(argv: list[str]) -> int:
    """Run the benchmark suite with its own arguments."""
    try:
        suite = importlib.import_module("timely._bench")
    except ModuleNotFoundError as exc:
        if exc.name != "timely._bench":
            raise
        print(
            "timely bench: the benchmark suite is not available in this "
            "installation of timely",
            file=sys.stderr,
        )
        return 2
    code: int = suite.main(argv)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timely",
        description="Distributed, async, fair rate limiters shared through Redis.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = commands.add_parser(
        "demo",
        help="show both limiters at work, on an embedded Redis by default",
        description=demo.__doc__,
    )
    d.add_argument(
        "--redis-url",
        default="memory://",
        help="where the state lives (default: memory://, embedded in this process)",
    )
    d.add_argument(
        "--workers", type=int, default=12, help="simulated workers (default: 12)"
    )

    i = commands.add_parser(
        "inspect",
        help="show the limiters that a Redis holds",
        description=inspect.__doc__,
    )
    i.add_argument(
        "--redis-url",
        help="the Redis to read (default: $TIMELY_REDIS_URL, else "
        "redis://localhost:6379)",
    )
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.add_argument("names", nargs="*", metavar="NAME", help="only these limiters")

    # bench parses its own arguments, --help included.
    commands.add_parser(
        "bench",
        add_help=False,
        help="measure throughput and latency; `timely bench --help` for options",
        description="Run the benchmark workloads against a Redis.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m timely`` and of the ``timely`` script."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run: Callable[[], int]
    if args.command == "demo":
        if args.workers < 1:
            parser.error(f"--workers must be >= 1, not {args.workers}")

        def run() -> int:
            asyncio.run(demo(args.redis_url, args.workers, Progress()))
            return 0

    else:
        if args.redis_url and args.redis_url.startswith("memory:"):
            parser.error(
                "inspect needs a shared Redis: a memory:// Redis lives inside "
                "one process, and this one would be new and empty"
            )

        def run() -> int:
            return inspect(args.redis_url, args.names, args.json)

    try:
        return run()
    except (TimelyError, ValueError, TypeError) as exc:
        message = str(exc).removeprefix("timely: ")
        print(f"timely {args.command}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
