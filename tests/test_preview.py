"""Previews of received tables: bounded whatever the file holds, and off the kernel's loop."""

from __future__ import annotations

import asyncio
import struct
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from p2p_nb import ChatPanel
from p2p_nb.app import P2PApp
from p2p_nb.errors import P2PError, PreviewRefused
from p2p_nb.widgets import view
from p2p_nb.widgets.preview import PreviewLimits, read_preview

from .test_widgets import changed_to, handled, room  # noqa: F401  (room is a fixture)

pytestmark = pytest.mark.anyio
LIMITS = PreviewLimits()


def test_parquet_decompression_bomb_is_refused_from_its_metadata(tmp_path: Path) -> None:
    """One value of 80 MiB of zeros is ~3 KB compressed: refused before decoding."""
    path = tmp_path / "bomb.parquet"
    table = pa.table({"blob": pa.array([bytes(80 * 2**20)], pa.binary())})
    pq.write_table(table, path, compression="zstd")
    del table
    assert path.stat().st_size < 2**20
    with pytest.raises(PreviewRefused, match=r"uncompressed \(the preview decodes at most"):
        read_preview(path, "parquet", "dataframe")
    assert issubclass(PreviewRefused, P2PError)


def test_parquet_with_thousands_of_columns_shows_the_first_few(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"c{i}": [i, i + 1] for i in range(3000)}), path)
    got = read_preview(path, "parquet", "dataframe")
    assert got.columns == tuple(f"c{i}" for i in range(LIMITS.max_columns))
    assert got.rows[0][:3] == ("0", "1", "2")
    assert got.notes == (f"first {LIMITS.max_columns} of 3000 columns",)


def test_parquet_footer_larger_than_the_limit_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "footer.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64 + struct.pack("<I", 512 * 2**20) + b"PAR1")
    with pytest.raises(PreviewRefused, match=r"its metadata is 536\.9 MB"):
        read_preview(path, "parquet", "dataframe")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(PreviewRefused, match="no PAR1 footer"):
        read_preview(path, "parquet", "dataframe")


def test_dataframe_preview_keeps_values_and_drops_pandas_index_columns(tmp_path: Path) -> None:
    path = tmp_path / "df.parquet"
    pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 19.0]}).to_parquet(path, index=True)
    got = read_preview(path, "parquet", "dataframe")
    assert got.columns == ("city", "temp")
    assert got.rows == (("Oslo", "3.5"), ("Lima", "19.0"))


def test_csv_with_one_gigantic_cell_is_read_only_up_to_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge-cell.csv"
    with path.open("w") as f:
        f.write("item,price\nfirst,1\n")
        f.write("x" * (64 * 2**20) + ",2\n")  # one 64 MiB cell on the third line
    got = read_preview(path, "csv", "file")
    assert got.columns == ("item", "price")
    assert got.rows == (("first", "1"),)  # the cut line is left out, not shown half
    assert "only the first 1.0 MB of the file were read" in got.notes
    # the same cell on the first line: nothing parseable within the limit, said plainly
    path.write_text("y" * (4 * 2**20) + "\n")
    with pytest.raises(PreviewRefused, match="cannot read it as CSV: field larger than"):
        read_preview(path, "csv", "file")


def test_csv_rows_columns_and_cells_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    header = ",".join(f"h{i}" for i in range(500))
    rows = "\n".join(",".join(["v" * 100] * 500) for _ in range(50))
    path.write_text(f"{header}\n{rows}\n")
    got = read_preview(path, "csv", "file")
    assert len(got.columns) == LIMITS.max_columns
    assert len(got.rows) == LIMITS.rows
    assert all(len(cell) == LIMITS.max_cell_chars for row in got.rows for cell in row)
    assert got.rows[0][0].endswith("…")
    assert "first 20 of 500 columns" in got.notes
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\t2\n")
    assert read_preview(tsv, None, "file").rows == (("1", "2"),)
    with pytest.raises(PreviewRefused, match="unknown table format 'exe'"):
        read_preview(tsv, "exe", "dataframe")


async def test_preview_runs_in_the_panel_worker_not_on_the_kernel_loop(
    room: tuple[ChatPanel, P2PApp],  # noqa: F811
    tmp_path: Path,
) -> None:
    """While the preview worker is busy the panel says "preview…" and the loop runs on."""
    panel, partner = room
    busy, release = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(30)

    blocker = panel._previews.submit(occupy)
    assert await asyncio.to_thread(busy.wait, 10)
    csv = tmp_path / "prices.csv"
    csv.write_text("item,price\n<b>first-row-item</b>,1.5\n")
    panel.app.set_auto_accept(1 << 20)
    received = handled(panel.app, "file_received")
    await partner.share_file(csv)
    await received
    shown = panel.received.children[0].children[1]
    assert "preview…" in shown.value  # the handler returned without reading the file
    # the kernel's loop still serves the room: a chat message arrives and is rendered
    arrived = handled(panel.app, "message")
    await partner.send_message("still alive")
    await arrived
    assert "still alive" in panel.chat.value
    release.set()
    await asyncio.wrap_future(blocker)
    value = await changed_to(shown, lambda v: "preview…" not in v)
    assert "&lt;b&gt;first-row-item&lt;/b&gt;" in value
    assert "<td>1.5</td>" in value
    assert view.esc("<b>") in value
