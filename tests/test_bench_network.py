"""``python -m bench --network --quick`` runs end to end over the emulator and
reports every figure for every variant (p2p-nb, raw aiortc, Socket.IO relay).

No speed assertion (speed lives in the benchmark); but chat must arrive whole
and in order on every variant, since a benchmark of lost messages would
measure nothing.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pytest

from bench.network import COMPARE_SCTP, VARIANTS

from .test_bench import leaves, run_module
from .test_recovery import skip_without_netns_tools

DEFAULT_VARIANTS = set(VARIANTS) - set(COMPARE_SCTP)  # those only with --compare-sctp


@pytest.mark.timeout(330)
def test_quick_network_matrix_reports_every_figure(tmp_path: Path) -> None:
    skip_without_netns_tools()
    proc = run_module("bench", "--network", "--quick", "--out", str(tmp_path), timeout=320)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "network.json").read_text())
    points = results["points"]
    assert [p["name"] for p in points] == ["rtt20-loss2", "link100mbit-rtt20"]
    lossy, link = points
    assert lossy["emulator"]["lost"] > 0  # the emulator did drop packets there
    assert link["rate_mbit"] == 100
    for p in points:
        assert p["probe"]["udp_rtt_p50_ms"] >= 20 - 3  # the path had its delay
        assert set(p["variants"]) == DEFAULT_VARIANTS
        for key, v in p["variants"].items():
            assert v["chat"]["once_in_order"], (p["name"], key, v["chat"])
            assert set(v["file"]) == {f"{mb}MB" for mb in p["files_mb"]}
            for path, value in leaves(v, f"{p['name']}.{key}"):
                if not path.endswith(".unit") and not path.endswith("once_in_order"):
                    assert isinstance(value, numbers.Real), f"{path} = {value!r}"
    assert set(link["mesh"]) == {"peers", "unit", *DEFAULT_VARIANTS}
    assert all(link["mesh"][k] > 0 for k in DEFAULT_VARIANTS)
    png = tmp_path / "network.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Socket.IO relay" in proc.stdout
