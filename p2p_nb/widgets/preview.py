"""The first rows of a received CSV/TSV/Parquet file, read with hard limits.

The file comes from another party, so reading it must cost a bounded amount of
time and memory whatever it holds: a Parquet file can promise gigabytes that
decompress from a few kilobytes, or thousands of columns; a CSV can be one
gigantic cell or one endless line. So:

- Parquet: the footer length (the file's last 8 bytes) is checked before
  pyarrow parses the footer; then, from the metadata alone, only the first
  :attr:`PreviewLimits.max_columns` columns are chosen and the first row
  group's uncompressed size of those columns must be within
  :attr:`PreviewLimits.max_parquet_bytes`. Only then is one small batch decoded.
- CSV/TSV: at most :attr:`PreviewLimits.max_csv_bytes` are read, and Python's
  ``csv`` reader (which refuses any cell over 131 072 characters) parses them.

Every cell becomes text cut to :attr:`PreviewLimits.max_cell_chars`. This runs
in a worker thread of the panel (never on the kernel's loop nor the network
thread); it raises :class:`~p2p_nb.errors.PreviewRefused` with a plain reason
when a limit says no.
"""

from __future__ import annotations

import csv
import io
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PreviewRefused
from .view import MAX_CELL_CHARS, Preview, clip, human_bytes

_INDEX_LEVEL = re.compile(r"__index_level_\d+__")


@dataclass(frozen=True)
class PreviewLimits:
    rows: int = 5
    max_columns: int = 20
    """Columns shown; the others are named in a note, never decoded."""
    max_cell_chars: int = MAX_CELL_CHARS
    max_csv_bytes: int = 2**20
    """Bytes of a CSV/TSV read; the rest of the file is not touched."""
    max_parquet_bytes: int = 64 * 2**20
    """Largest uncompressed size of the first row group's chosen columns."""
    max_parquet_footer_bytes: int = 4 * 2**20
    """Largest Parquet footer (schema and row-group metadata) parsed."""


def read_preview(
    path: Path, fmt: object, kind: str, limits: PreviewLimits | None = None
) -> Preview:
    """The first rows of ``path`` as text cells; ``fmt`` is the sender's claimed
    format (``meta["format"]``), used only to choose the reader."""
    limits = limits or PreviewLimits()
    fmt = fmt if isinstance(fmt, str) and fmt else path.suffix.lower().lstrip(".")
    if fmt == "parquet":
        return _parquet(path, limits)
    if fmt in ("csv", "tsv"):
        return _csv(path, "\t" if fmt == "tsv" else ",", limits)
    raise PreviewRefused(f"unknown table format {fmt!r}")


def _cell(value: Any, limits: PreviewLimits) -> str:
    raw = value[: limits.max_cell_chars + 1] if isinstance(value, bytes) else value
    return clip(str(raw), limits.max_cell_chars)


def _columns_note(shown: int, total: int) -> tuple[str, ...]:
    return (f"first {shown} of {total} columns",) if total > shown else ()


def _parquet(path: Path, limits: PreviewLimits) -> Preview:
    import pyarrow.parquet as pq

    size = path.stat().st_size
    with path.open("rb") as f:
        if size < 12:
            raise PreviewRefused("not a Parquet file (too short)")
        f.seek(size - 8)
        tail = f.read(8)
    footer, magic = struct.unpack("<I4s", tail)
    if magic != b"PAR1":
        raise PreviewRefused("not a Parquet file (no PAR1 footer)")
    if footer > limits.max_parquet_footer_bytes:
        raise PreviewRefused(
            f"its metadata is {human_bytes(footer)} "
            f"(the preview reads at most {human_bytes(limits.max_parquet_footer_bytes)})"
        )
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    # pandas' unnamed index levels are columns in the file; a preview leaves them out
    names: Sequence[str] = [n for n in pf.schema_arrow.names if not _INDEX_LEVEL.fullmatch(n)]
    chosen = list(names[: limits.max_columns])
    notes = _columns_note(len(chosen), len(names))
    if meta.num_row_groups == 0 or not chosen:
        return Preview(tuple(_cell(n, limits) for n in chosen), (), notes)
    group = meta.row_group(0)
    wanted = set(chosen)
    uncompressed = 0
    for i in range(group.num_columns):
        column = group.column(i)
        if column.path_in_schema.split(".")[0] in wanted:
            uncompressed += max(0, column.total_uncompressed_size)
    if uncompressed > limits.max_parquet_bytes:
        raise PreviewRefused(
            f"its first {group.num_rows} rows are {human_bytes(uncompressed)} uncompressed "
            f"(the preview decodes at most {human_bytes(limits.max_parquet_bytes)})"
        )
    batch = next(pf.iter_batches(batch_size=limits.rows, row_groups=[0], columns=chosen), None)
    rows: tuple[tuple[str, ...], ...] = ()
    if batch is not None:
        values = [batch.column(i).slice(0, limits.rows).to_pylist() for i in range(len(chosen))]
        rows = tuple(
            tuple(_cell(col[r], limits) for col in values)
            for r in range(min(limits.rows, batch.num_rows))
        )
    return Preview(tuple(_cell(n, limits) for n in chosen), rows, notes)


def _csv(path: Path, sep: str, limits: PreviewLimits) -> Preview:
    with path.open("rb") as f:
        head = f.read(limits.max_csv_bytes + 1)
    cut = len(head) > limits.max_csv_bytes
    head = head[: limits.max_csv_bytes]
    if cut and b"\n" in head:  # drop the partial last line; keep it if it is all there is
        head = head[: head.rindex(b"\n") + 1]
    text = head.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    table: list[list[str]] = []
    try:
        for record in reader:
            table.append(record)
            if len(table) > limits.rows:
                break
    except csv.Error as exc:
        raise PreviewRefused(f"cannot read it as CSV: {exc}") from None
    if not table:
        return Preview((), (), ("the file is empty",))
    header, body = table[0], table[1:]
    width = max(len(r) for r in table)
    shown = min(width, limits.max_columns)
    header = header + [""] * (shown - len(header))
    notes = _columns_note(shown, width)
    if cut:
        notes += (f"only the first {human_bytes(limits.max_csv_bytes)} of the file were read",)
    return Preview(
        tuple(_cell(c, limits) for c in header[:shown]),
        tuple(tuple(_cell(c, limits) for c in r[:shown]) for r in body),
        notes,
    )
