"""``python -m bench --quick`` still runs end to end and reports every figure.

No wall-clock assertion: the figures depend on the machine and its load; this
only proves the suite works (it needs the ``bench`` extra: matplotlib, psutil).
"""

from __future__ import annotations

import json
import numbers
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import FIGURES

ROOT = Path(__file__).resolve().parent.parent

# The bench extra (matplotlib, psutil) is installed by scripts/setup.sh: a
# missing one fails here rather than skipping the only check that bench runs.
import matplotlib  # noqa: E402, F401
import psutil  # noqa: E402, F401


def run_module(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}")]
    return [(path, value)]


@pytest.mark.timeout(300)
def test_quick_suite_reports_every_figure(tmp_path: Path) -> None:
    proc = run_module("bench", "--quick", "--out", str(tmp_path), timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for figure in FIGURES:
        assert figure in results, f"{figure} missing"
        values = leaves(results[figure], figure)
        assert values, f"{figure} is empty"
        for path, value in values:
            if path.endswith(".unit"):
                continue
            assert isinstance(value, numbers.Real), f"{path} = {value!r}"
    assert results["targets"]
    png = tmp_path / "results.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets" in proc.stdout


@pytest.mark.timeout(180)
def test_profile_samples_both_ends_of_a_burst(tmp_path: Path) -> None:
    """``python -m bench.profile``: py-spy attaches to both workers and the
    summary names the frames where they spent their time."""
    proc = run_module(
        "bench.profile", "--kind", "p2p", "-n", "20000", "--out", str(tmp_path), timeout=170
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "msg/s delivered" in proc.stdout
    for side in ("sender", "receiver"):
        stacks = (tmp_path / f"p2p-{side}.txt").read_text().splitlines()
        assert any("aiortc/rtcsctptransport.py" in line for line in stacks), side
        assert f"p2p-{side}.txt: " in proc.stdout
