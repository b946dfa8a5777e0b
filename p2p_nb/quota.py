"""What one peer (or all of them together) may make this kernel hold.

A room member can offer files as fast as it can send messages; without caps
each offer would cost memory, an accepted one a file descriptor, and all of
them the disk. The checks here count the receiver's own records (offers not
yet answered, transfers holding a part file) and the bytes those transfers
still have to write, against :class:`~p2p_nb.transfer.TransferSettings`.
They only ever refuse what is new: nothing already received or in progress
is touched. DataFrames read back from received files are checked against
their own declared size (Parquet metadata, or the CSV's length) first.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Protocol, TypeVar

from .errors import DataFrameTooLarge, TransferLimitError

PENDING_STATES = frozenset({"offered"})
"""An offer waiting for ``accept()`` or ``decline()``."""
ACTIVE_STATES = frozenset({"receiving", "interrupted"})
"""An accepted transfer: it holds an open part file and will write more bytes."""

MAX_DATAFRAME_ROWS = 50_000_000
"""Rows :meth:`ReceivedFile.dataframe` reads without being asked for more."""
MAX_DATAFRAME_BYTES = 2 * 2**30
"""Uncompressed bytes (Parquet: the sum of its row groups' uncompressed data;
CSV: the file size) :meth:`ReceivedFile.dataframe` reads without being asked
for more. A Parquet file a few kilobytes long can declare gigabytes."""


class Limits(Protocol):
    """The settings the checks read (``TransferSettings`` has them all)."""

    max_pending_offers_per_peer: int
    max_pending_offers: int
    max_active_per_peer: int
    max_active: int
    keep_free_bytes: int


class Held(Protocol):
    """What the checks need to know of one incoming record."""

    @property
    def peer_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class _Finishable(Protocol):
    @property
    def finished(self) -> bool: ...


def offer_refusal(
    records: Iterable[Held], peer_id: str, limits: Limits
) -> TransferLimitError | None:
    """Why a new offer from ``peer_id`` must be declined at once, or None."""
    pending = [r for r in records if r.state in PENDING_STATES]
    return _over_cap(
        pending,
        peer_id,
        ("pending offers from you", limits.max_pending_offers_per_peer),
        ("pending offers", limits.max_pending_offers),
        "max_pending_offers",
    )


def _over_cap(
    held: list[Held],
    peer_id: str,
    per_peer: tuple[str, int],
    overall: tuple[str, int],
    setting: str,
) -> TransferLimitError | None:
    """The refusal when ``peer_id`` already has ``per_peer`` of ``held`` or
    everyone together ``overall`` (each: what they are, the limit); ``setting``
    names the overall limit (the per-peer one is ``setting + "_per_peer"``)."""
    mine = sum(1 for r in held if r.peer_id == peer_id)
    for (what, limit), count, name in (
        (per_peer, mine, f"{setting}_per_peer"),
        (overall, len(held), setting),
    ):
        if count >= limit:
            return TransferLimitError(
                f"too many {what} ({count}; the receiver's limit is {limit})", name
            )
    return None


def reserved_bytes(records: Iterable[Held]) -> int:
    """Bytes the accepted transfers still have to write."""
    return sum(max(0, r.size - r.bytes) for r in records if r.state in ACTIVE_STATES)


def accept_refusal(
    records: Iterable[Held], new: Held, limits: Limits, free: int
) -> TransferLimitError | None:
    """Why ``new`` cannot be accepted now, or None.

    ``free`` is the free space of the downloads folder: it must hold ``new``,
    everything the other accepted transfers still have to write, and
    ``keep_free_bytes`` on top.
    """
    others = [r for r in records if r is not new]
    active = [r for r in others if r.state in ACTIVE_STATES]
    busy = _over_cap(
        active,
        new.peer_id,
        ("transfers from you in progress", limits.max_active_per_peer),
        ("transfers in progress", limits.max_active),
        "max_active",
    )
    if busy is not None:
        return busy
    reserved = reserved_bytes(active)
    if new.size + reserved + limits.keep_free_bytes > free:
        return TransferLimitError(
            f"not enough disk space: {new.size} bytes offered, {free} free, {reserved} "
            f"reserved for transfers in progress, {limits.keep_free_bytes} kept free",
            "disk_space",
        )
    return None


K = TypeVar("K")
F = TypeVar("F", bound=_Finishable)


def prune(records: MutableMapping[K, F], keep: int) -> None:
    """Forget all but the ``keep`` most recent finished records (oldest first
    out; dicts keep insertion order). Unfinished records always stay."""
    finished = [key for key, record in records.items() if record.finished]
    for key in finished[: max(0, len(finished) - keep)]:
        del records[key]


def check_dataframe(path: Path, fmt: str, max_rows: int, max_bytes: int) -> None:
    """Raise :class:`DataFrameTooLarge` if reading ``path`` would go over the
    limits, judged from what the file declares (no data is read)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.read_metadata(path)
        rows = meta.num_rows
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        what = "uncompressed bytes"
    else:
        rows = None
        size = path.stat().st_size
        what = "bytes"
    hint = "pass max_rows=/max_bytes= to dataframe() to read it anyway"
    if rows is not None and rows > max_rows:
        raise DataFrameTooLarge(f"{path.name} has {rows} rows; the limit is {max_rows} ({hint})")
    if size > max_bytes:
        raise DataFrameTooLarge(
            f"{path.name} holds {size} {what}; the limit is {max_bytes} ({hint})"
        )
