"""``python -m bench --browser --quick`` runs end to end: the web client in
Debian Chromium beside the kernels, every direction, the page's memory.

No speed assertion (the figures depend on the machine and its load); but each
transfer must have arrived whole (the benchmark checks sizes and the
receivers their SHA-256, and fails otherwise), and every figure must be there
with a number, so a web client or a bench that stopped working fails here.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pytest

from bench.browser import DIRECTIONS

from .test_bench import leaves, run_module

MEMORY_KEYS = {
    "js_heap_used_mb",
    "js_heap_total_mb",
    "renderer_rss_mb",
    "renderer_pss_mb",
    "browser_rss_mb",
    "browser_rss_anon_mb",
    "chromium_pss_total_mb",
}


@pytest.mark.timeout(300)
def test_quick_browser_bench_reports_every_direction_and_the_pages_memory(
    tmp_path: Path,
) -> None:
    proc = run_module("bench", "--browser", "--quick", "--out", str(tmp_path), timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "browser.json").read_text())
    throughput = results["throughput"]
    assert set(throughput) == {"file_mb", *DIRECTIONS}
    for key in DIRECTIONS:
        for path, value in leaves(throughput[key], key):
            assert isinstance(value, numbers.Real), f"{path} = {value!r}"
        assert throughput[key]["mb_s"]["min"] > 0
    memory = results["receive_memory"]
    assert set(memory) == {"download", "disk"}
    for mode, d in memory.items():
        assert d["file_mb"] == results["meta"]["config"]["big_mb"]
        for when in ("baseline", "peak", "after", "settled"):
            assert set(d[when]) == MEMORY_KEYS, (mode, when)
            # a renderer found and read: the page's own process, not 0
            assert d[when]["renderer_rss_mb"] > 0, (mode, when, d[when])
            assert d[when]["js_heap_used_mb"] > 0, (mode, when, d[when])
        assert d["samples"], mode
    assert results["measure_user_agent_specific_memory"]
    assert (tmp_path / "browser.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kernel → browser (to disk)" in proc.stdout
