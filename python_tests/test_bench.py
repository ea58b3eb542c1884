"""`python -m timely bench` measures every figure of the suite, writes them
as JSON and draws them; these tests check that each figure is there and
makes sense, never how fast this machine is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FIGURES = {
    "semaphore_cycles_per_s": "evalsha_per_s",
    "bucket_admissions_per_s": "evalsha_per_s",
    "sequential_p50_us": "ping_p50_us",
    "sequential_p99_us": "ping_p50_us",
    "handoff_p50_us": "ping_p50_us",
    "handoff_p99_us": "ping_p50_us",
    "lateness_p50_us": "ping_p50_us",
    "lateness_p99_us": "ping_p50_us",
    "waiters_connections": None,
    "waiters_threads": None,
    "waiters_rss_growth_mib": None,
}
"""Every figure of the suite, and the baseline figure its ratio divides by."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TIMELY_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "timely", "bench", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def check_report(report: dict[str, Any]) -> None:
    """Every figure is present, positive and finite, with its ratio."""
    baseline = report["baseline"]
    for name in ("ping_p50_us", "evalsha_per_s"):
        assert baseline[name] > 0, (name, baseline)
    assert report["machine"]["cpus"] >= 1
    assert set(report["figures"]) == set(FIGURES)
    for name, per in FIGURES.items():
        fig = report["figures"][name]
        assert math.isfinite(fig["value"]) and fig["value"] > 0, (name, fig)
        assert fig["per"] == per, (name, fig)
        if per is not None:
            assert fig["ratio"] == fig["value"] / baseline[per], (name, fig)
    # Percentiles are ordered.
    figures = report["figures"]
    for what in ("sequential", "handoff", "lateness"):
        assert figures[f"{what}_p50_us"]["value"] <= figures[f"{what}_p99_us"]["value"]


def test_quick_bench_on_given_server(fresh_redis: Any, tmp_path: Path) -> None:
    server = fresh_redis()
    out = bench(
        "--quick",
        "--redis-url",
        server.url,
        "--plot",
        "out.png",
        "--json",
        "out.json",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    check_report(report)
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG_SIGNATURE
    for name in FIGURES:
        assert name in out.stdout, (name, out.stdout)


def test_quick_bench_starts_its_own_server(tmp_path: Path) -> None:
    out = bench("--quick", "--json", "out.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    check_report(json.loads((tmp_path / "out.json").read_text()))


def test_bench_help_and_bad_url(tmp_path: Path) -> None:
    help_ = bench("--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    for option in ("--redis-url", "--json", "--plot", "--quick"):
        assert option in help_.stdout

    bad = bench("--quick", "--redis-url", "memory://", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--redis-url 'memory://'" in bad.stderr
    assert not list(tmp_path.iterdir())
