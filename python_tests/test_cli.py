"""`python -m timely demo` runs both limiters on the embedded Redis."""

from __future__ import annotations

import subprocess
import sys


def test_demo_finishes_and_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "timely", "demo", "--workers", "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "at most 3 holders at once (capacity 3)" in out.stdout
    assert "18 calls admitted" in out.stdout
