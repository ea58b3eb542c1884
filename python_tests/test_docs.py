"""The README's diagrams: drawn from docs/*.dot by `make docs`, committed as
PNGs, referenced from the README, and naming only files that exist."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = ("semaphore_aenter", "semaphore_aexit", "token_bucket")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file; fails the test if it is not one."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR", f"{path} has no IHDR chunk"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("name", DIAGRAMS)
def test_each_diagram_is_committed_and_referenced(name: str) -> None:
    assert (ROOT / "docs" / f"{name}.dot").is_file()
    width, height = png_size(ROOT / "docs" / f"{name}.png")
    assert 300 < width < 2000 and 300 < height < 2000  # readable in a README
    readme = (ROOT / "README.md").read_text()
    assert f"](docs/{name}.png)" in readme


@pytest.mark.parametrize("name", DIAGRAMS)
def test_diagrams_name_only_files_that_exist(name: str) -> None:
    source = (ROOT / "docs" / f"{name}.dot").read_text()
    named = set(re.findall(r"[\w/]+\.(?:lua|go|py)\b", source))
    assert any(n.endswith(".lua") for n in named), "a diagram names its scripts"
    for n in named:
        path = ROOT / n if "/" in n else ROOT / "core" / "scripts" / n
        assert path.is_file(), f"docs/{name}.dot names {n}, which does not exist"


def test_make_docs_renders_every_diagram(tmp_path: Path) -> None:
    if shutil.which("dot") is None or shutil.which("make") is None:
        pytest.fail("Graphviz's dot and make are needed: `make deps`", pytrace=False)
    out = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "docs", f"DOCS_OUT={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for name in DIAGRAMS:
        width, height = png_size(tmp_path / f"{name}.png")
        assert width > 300 and height > 300
