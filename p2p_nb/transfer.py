"""File transfers over the mesh: offer, accept, chunks, acks, verify, resume.

Sender and receiver keep one record per (transfer, peer). Bulk data goes out
only when the data channel has room (``bufferedAmount`` below a high-water
mark) and the receiver has acknowledged all but a window of it, so memory is
bounded by those two numbers, never by the file size. The receiver hashes as
it writes, checks SHA-256 before anything gets its final name, and a dropped
link pauses the transfer until the link is back, when it resumes from the
receiver's byte count.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import protocol, quota
from .errors import PeerUnavailable, ProtocolError, TransferError, TransferLimitError
from .files import create_part, publish, safe_file_name
from .mesh import Mesh
from .tasks import TaskSet

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

Emit = Callable[[str, str | None, Any], None]
Runner = Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]


@dataclass
class TransferSettings:
    """Every file-transfer limit with its default (see docs/api.md, "File safety and limits")."""

    download_dir: Path = field(default_factory=lambda: Path.cwd() / "p2p_downloads")
    max_file_bytes: int = 16 * 2**30
    """Offers above this are declined."""
    high_water: int = 1 * 2**20
    """Bytes buffered in the data channel before the sender waits."""
    window: int = 256 * 2**10
    """Bytes sent but not yet acknowledged before the sender waits (the least
    window; see :meth:`window_for`). Small on purpose: aiortc's SCTP sender
    rescanned everything in flight on every acknowledgement, so a long flight
    cost CPU, not speed gained (100 MB on loopback, uvloop: 32 MB/s with 8 MiB
    in flight, 48 MB/s with 256 KiB).
    :class:`~p2p_nb._aiortc.quick_transmit.QuickTransmit` now skips that
    scan; a short flight still keeps queues (and chat behind a
    transfer) short on a fast path."""
    window_rate: int = 64 * 10**6
    """Bytes/s the window must allow at the link's round-trip time (above what
    aiortc reaches), so a long link gets the window its RTT needs."""
    max_window: int = 8 * 2**20
    ack_every: int = 64 * 2**10
    """The receiver acknowledges every this many bytes (must be below the
    sender's window)."""
    resume_timeout: float = 60.0
    """How long an interrupted transfer waits for its link to come back."""
    progress_interval: float = 0.25
    auto_accept_max_bytes: int | None = None
    """Accept offers up to this size without asking; None asks every time."""
    max_pending_offers_per_peer: int = 16
    """Offers from one peer waiting for an answer; more are declined at once."""
    max_pending_offers: int = 64
    """Offers from all peers together waiting for an answer."""
    max_active_per_peer: int = 4
    """Accepted transfers from one peer in progress (each holds a file
    descriptor and will write to the disk). An auto-accepted offer beyond it
    waits (as a pending offer) until one ends; ``accept()`` raises
    TransferLimitError and leaves the offer pending."""
    max_active: int = 16
    """Accepted incoming transfers in progress from all peers together."""
    keep_free_bytes: int = 64 * 2**20
    """Free space of the downloads folder that accepting never uses: an offer
    is accepted only if its size, plus what every accepted transfer still has
    to write, plus this, fits in the free space."""
    stall_timeout: float | None = 120.0
    """An accepted incoming transfer whose open link brings no data for this
    long fails (``no data for ...``), so a peer cannot hold slots of
    ``max_active`` and open files for ever; None: never."""
    history: int = 256
    """Finished transfers (done, declined, failed) remembered in each
    direction; older ones are forgotten, so a peer's offers cannot grow memory."""

    def window_for(self, rtt: float | None) -> int:
        """The sender's window on a link with this round-trip time (seconds)."""
        needed = int((rtt or 0.0) * self.window_rate)
        return max(self.window, min(self.max_window, needed))


class _Record:
    """What both directions share: identity, progress, outcome."""

    direction = ""

    def __init__(
        self, manager: TransferManager, tid: str, peer_id: str, name: str, size: int
    ) -> None:
        self._manager = manager
        self._runner = manager.runner
        self.id = tid
        self.peer_id = peer_id
        self.name = name
        self.size = size
        self.state = "offered"
        self.bytes = 0
        self.reason = ""
        self.started = time.monotonic()
        self._last_progress = 0.0
        self._done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._resume_timer: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self._done.done()

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop the transfer; the other side gets ``transfer_failed`` with ``reason``."""
        await self._runner(self._manager.cancel(self, reason))

    def rate(self) -> float:
        return self.bytes / max(1e-6, time.monotonic() - self.started)

    async def wait(self, timeout: float | None = None) -> str:
        """Until the transfer ends; its final state ("done", "declined", "failed", ...)."""

        async def waiter() -> str:
            return await asyncio.wait_for(asyncio.shield(self._done), timeout)

        result: str = await self._runner(waiter())
        return result

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} {self.state} "
            f"{self.bytes}/{self.size} peer={self.peer_id}>"
        )


class OutgoingTransfer(_Record):
    direction = "send"

    def __init__(
        self, manager: TransferManager, peer_id: str, offer: protocol.FileOffer, path: Path
    ) -> None:
        super().__init__(manager, offer.id, peer_id, offer.name, offer.size)
        self.offer = offer
        self.path = path
        self.acked = 0
        self.accepted = False
        """Whether the receiver ever accepted: after a link drop an accepted
        transfer is offered again as a resume, an unanswered one as itself."""
        self.starts: list[int] = []
        """Byte offsets the sending started from: [0] normally, more after resumes."""
        self._acked_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None


class IncomingTransfer(_Record):
    """An offer received; ``accept()`` or ``decline()`` it."""

    direction = "receive"

    def __init__(
        self,
        manager: TransferManager,
        offer: protocol.FileOffer,
        peer_id: str,
        sender_name: str,
    ) -> None:
        super().__init__(manager, offer.id, peer_id, offer.name, offer.size)
        self.offer = offer
        self.sender_name = sender_name
        self.kind = offer.kind
        self.meta = offer.meta
        self.sha256 = offer.sha256
        self.safe_name = safe_file_name(offer.name)
        self.part: Path | None = None
        """The part file, named by us when the transfer was accepted: what a
        resume continues, and what is deleted if it fails."""
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._acked = 0
        self._last_data = 0.0
        self.record: ReceivedFile | None = None
        self.auto = False
        """Accepted without asking, as soon as the transfer limits allow."""

    @property
    def key(self) -> str:
        """The name this lands under in ``app.received``."""
        label = self.meta.get("name")
        return label if self.kind == "dataframe" and isinstance(label, str) else self.safe_name

    async def accept(self) -> None:
        """Start receiving. Raises :class:`TransferLimitError` (the offer stays
        pending) while ``max_active_per_peer`` / ``max_active`` transfers are in
        progress, or when the disk cannot hold it next to what the accepted
        transfers still need (the offer is then declined)."""
        await self._runner(self._manager.accept(self))

    async def decline(self, reason: str = "declined") -> None:
        await self._runner(self._manager.decline(self, reason))


@dataclass(frozen=True)
class ReceivedFile:
    """A verified file in the downloads folder."""

    name: str
    path: Path
    size: int
    sha256: str
    sender: str
    sender_name: str
    kind: str
    meta: dict[str, Any]

    def dataframe(
        self,
        *,
        max_rows: int = quota.MAX_DATAFRAME_ROWS,
        max_bytes: int = quota.MAX_DATAFRAME_BYTES,
    ) -> pandas.DataFrame:
        """Read a shared DataFrame back (Parquet keeps every dtype and the index).

        The sender chose the file: before any data is read, its declared rows
        and uncompressed size (Parquet metadata; for CSV the file size) are
        checked against ``max_rows`` and ``max_bytes``, so a small file that
        decompresses to gigabytes raises :class:`DataFrameTooLarge` instead of
        filling the kernel's memory. Pass larger limits to read it anyway.
        """
        import pandas as pd

        if self.kind != "dataframe":
            raise TransferError(f"{self.name!r} is a plain file, not a DataFrame")
        fmt = self.meta.get("format")
        if fmt in ("parquet", "csv"):
            try:
                quota.check_dataframe(self.path, fmt, max_rows, max_bytes)
            except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors
                raise TransferError(f"cannot read {self.name!r}: {exc}") from exc
        if fmt == "parquet":
            return pd.read_parquet(self.path, engine="pyarrow")
        if fmt == "csv":
            return pd.read_csv(self.path, index_col=0)
        raise TransferError(f"unknown DataFrame format {fmt!r}")


class FileShare:
    """One file offered to one or more peers."""

    def __init__(self, runner: Runner, transfers: dict[str, OutgoingTransfer]) -> None:
        self._runner = runner
        self.transfers = transfers

    async def wait(self, timeout: float | None = None) -> dict[str, str]:
        """Until every transfer ends: {peer_id: final state}."""
        return {pid: await t.wait(timeout) for pid, t in self.transfers.items()}

    def __repr__(self) -> str:
        return f"<FileShare {list(self.transfers.values())}>"


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, reading it in blocks (run it in a thread)."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(4 * 2**20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


class TransferManager:
    """Every transfer of one room membership, in both directions."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        emit: Emit,
        runner: Runner,
        peer_name: Callable[[str], str],
        settings: TransferSettings,
    ) -> None:
        self.mesh = mesh
        self.emit = emit
        self.runner = runner
        self.peer_name = peer_name
        self.settings = settings
        self.outgoing: dict[tuple[str, str], OutgoingTransfer] = {}
        self.incoming: dict[str, IncomingTransfer] = {}
        self.received: dict[str, ReceivedFile] = {}
        self._tasks = TaskSet("transfers")
        self._closed = False
        self._tasks.spawn(self._watch_stalls(), "stall-watch")
        self.chunk_hook: Callable[[str, int, bytes], bytes] | None = None
        """Test hook: rewrites each outgoing chunk payload (transfer id, offset, data)."""

    # ================================================================= send
    async def share(
        self,
        path: Path,
        peers: list[str],
        *,
        name: str | None = None,
        kind: str = "file",
        meta: dict[str, Any] | None = None,
    ) -> FileShare:
        offered_name = name if name is not None else path.name
        if len(offered_name) > protocol.MAX_FILE_NAME_CHARS:
            raise ValueError(
                f"file name of {len(offered_name)} characters; the limit is "
                f"{protocol.MAX_FILE_NAME_CHARS}"
            )
        try:
            size, digest = await asyncio.to_thread(file_digest, path)
        except OSError as exc:
            raise TransferError(f"cannot share {path}: {exc}") from exc
        transfers: dict[str, OutgoingTransfer] = {}
        for peer_id in peers:
            offer = protocol.FileOffer(
                id=protocol.new_transfer_id(),
                name=offered_name,
                size=size,
                sha256=digest,
                kind=kind,
                meta=meta or {},
            )
            transfer = OutgoingTransfer(self, peer_id, offer, path)
            self.outgoing[(offer.id, peer_id)] = transfer
            transfers[peer_id] = transfer
            self.mesh.send(peer_id, offer.encode())
        return FileShare(self.runner, transfers)

    async def _send_loop(self, t: OutgoingTransfer, start: int) -> None:
        link = self.mesh.link(t.peer_id)
        s = self.settings
        t.state = "sending"
        t.bytes = t.acked = start
        t.starts.append(start)
        generation = link.generation
        with t.path.open("rb") as f:
            f.seek(start)
            pos = start
            while pos < t.size:
                while pos - t.acked > s.window_for(link.rtt):
                    t._acked_event.clear()
                    await t._acked_event.wait()
                await link.wait_writable(s.high_water)
                if link.generation != generation:
                    raise PeerUnavailable("the link was re-established; resume negotiates again")
                data = f.read(protocol.CHUNK_SIZE)
                if not data:
                    raise TransferError(f"{t.path} shrank while it was being sent")
                if self.chunk_hook is not None:
                    data = self.chunk_hook(t.id, pos, data)
                link.send(protocol.encode_chunk(t.id, pos, data))
                pos += len(data)
                t.bytes = pos
                # One chunk per turn: other transfers on this link, and chat,
                # get the channel in between.
                await asyncio.sleep(0)
        t.state = "completing"
        link.send(protocol.FileControl("file-complete", t.id, offset=t.size).encode())

    def _start_sending(self, t: OutgoingTransfer, start: int) -> None:
        async def run() -> None:
            try:
                await self._send_loop(t, start)
            except PeerUnavailable:
                pass  # the link went down; peer_state handling pauses or fails us
            except (OSError, TransferError) as exc:
                self._fail(t, f"cannot read {t.path}: {exc}", notify=True)

        if t._task is not None:
            t._task.cancel()
        t._task = self._tasks.spawn(run(), f"send-{t.id}")

    # ============================================================== receive
    def on_offer(self, peer_id: str, offer: protocol.FileOffer) -> None:
        existing = self.incoming.get(offer.id)
        if existing is not None and existing.peer_id == peer_id:
            if dataclasses.replace(offer, resume=False) != existing.offer:
                self.emit("error", peer_id, ProtocolError(f"offer {offer.id} changed"))
            elif existing.finished:
                # our answer was lost with the link: give it again
                kind = {"done": "file-done", "declined": "file-decline"}.get(
                    existing.state, "file-cancel"
                )
                self._send(peer_id, kind, offer.id, offset=existing.bytes, reason=existing.reason)
            elif existing.state != "offered":
                # accepted here: the sender lost the link (and maybe our
                # file-accept) and asks again, as a resume or as the offer itself
                self._resume_incoming(existing)
            # else: the offer still waiting for an answer, sent again after a link
            # drop (as itself, or as a resume by an older sender): it stays pending
            return
        if offer.resume:
            self._send(peer_id, "file-cancel", offer.id, reason="unknown transfer")
            return
        if existing is not None:
            self.emit("error", peer_id, ProtocolError(f"duplicate offer {offer.id}"))
            return
        refusal = quota.offer_refusal(self.incoming.values(), peer_id, self.settings)
        t = IncomingTransfer(self, offer, peer_id, self.peer_name(peer_id))
        self.incoming[offer.id] = t
        if offer.size > self.settings.max_file_bytes:
            self._decline_now(
                t, f"larger than the receiver's limit of {self.settings.max_file_bytes} bytes"
            )
            return
        if refusal is not None:
            self._refuse(t, refusal)
            return
        self.emit("file_offer", peer_id, t)
        cap = self.settings.auto_accept_max_bytes
        if cap is not None and offer.size <= cap:
            t.auto = True
            self._auto_accept_waiting()

    def _refuse(self, t: IncomingTransfer, refusal: TransferLimitError) -> None:
        """Decline an offer over one of our limits: the peer gets the reason,
        the local user an ``error`` event naming the peer and the limit."""
        self._decline_now(t, str(refusal))
        who = self.peer_name(t.peer_id)
        error = TransferLimitError(f"declined {t.safe_name!r} from {who}: {refusal}", refusal.limit)
        self.emit("error", t.peer_id, error)

    def _auto_accept_waiting(self) -> None:
        """Accept the auto-accepted offers that wait for a free slot, oldest first.

        Offers over ``max_active_per_peer`` / ``max_active`` are not declined
        but wait (they count as pending offers, which are capped): they start
        as transfers in progress end.
        """
        for t in list(self.incoming.values()):
            if not (t.auto and t.state == "offered"):
                continue
            try:
                self._accept_now(t, auto=True)
            except TransferLimitError as exc:
                if exc.limit == "max_active":
                    return  # no slot for anyone
            except TransferError:
                pass  # declined and reported

    def _slot_freed(self) -> None:
        if not self._closed:
            self._auto_accept_waiting()

    async def accept(self, t: IncomingTransfer) -> None:
        """Start receiving ``t``.

        Over a count limit (transfers in progress) the offer stays pending and
        :class:`TransferLimitError` says why, so it can be accepted later; too
        little disk space (counting what accepted transfers still need)
        declines it.
        """
        self._accept_now(t, auto=False)

    def _accept_now(self, t: IncomingTransfer, *, auto: bool) -> None:
        if t.state != "offered":
            raise TransferError(f"transfer {t.name!r} is {t.state}, not waiting for an answer")
        folder = self.settings.download_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError as exc:
            self._decline_now(t, f"receiver cannot write: {exc}")
            raise TransferError(f"cannot save to {folder}: {exc}") from exc
        refusal = quota.accept_refusal(self.incoming.values(), t, self.settings, free)
        if refusal is not None:
            if refusal.limit == "disk_space":
                self._refuse(t, refusal)
            elif auto:
                log.info("offer %s waits for a free slot: %s", t.id, refusal)
            raise refusal
        try:
            t.part, fd = create_part(folder)
            t._file = os.fdopen(fd, "wb")
        except OSError as exc:
            self._decline_now(t, f"receiver cannot write: {exc}")
            raise TransferError(f"cannot save to {folder}: {exc}") from exc
        t.state = "receiving"
        t.started = t._last_data = time.monotonic()
        self._send(t.peer_id, "file-accept", t.id, offset=0)
        if t.size == 0:
            self._progress(t, force=True)

    async def decline(self, t: IncomingTransfer, reason: str) -> None:
        if t.state != "offered":
            raise TransferError(f"transfer {t.name!r} is {t.state}; cancel() it instead")
        self._decline_now(t, reason)

    def _decline_now(self, t: IncomingTransfer, reason: str) -> None:
        t.state = "declined"
        t.reason = reason
        self._send(t.peer_id, "file-decline", t.id, reason=reason)
        self._finish(t, "declined", reason)

    def on_chunk(self, peer_id: str, frame: bytes) -> None:
        tid, offset, payload = protocol.decode_chunk(frame)
        t = self.incoming.get(tid)
        if t is None or t.peer_id != peer_id or t.state != "receiving" or t._file is None:
            raise ProtocolError(f"chunk for transfer {tid} which is not receiving")
        if offset < t.bytes:
            return  # a repeat of what we hold already
        if offset != t.bytes:
            self._fail(t, f"chunk at byte {offset}, expected {t.bytes}", notify=True)
            return
        if t.bytes + len(payload) > t.size:
            self._fail(t, "the sender sent more bytes than it offered", notify=True)
            return
        try:
            t._file.write(payload)
        except OSError as exc:
            self._fail(t, f"cannot write {t.safe_name}: {exc}", notify=True)
            return
        t._hash.update(payload)
        t._last_data = time.monotonic()
        t.bytes += len(payload)
        if t.bytes - t._acked >= self.settings.ack_every or t.bytes == t.size:
            t._acked = t.bytes
            self._send(peer_id, "file-ack", tid, offset=t.bytes)
        self._progress(t, force=t.bytes == t.size)

    def _complete_incoming(self, t: IncomingTransfer) -> None:
        assert t._file is not None
        if t.bytes != t.size:
            self._fail(t, f"sender finished at {t.bytes} of {t.size} bytes", notify=True)
            return
        t._file.close()
        t._file = None
        part = t.part
        assert part is not None
        if t._hash.hexdigest() != t.sha256:
            self._fail(
                t, "SHA-256 mismatch: the file was corrupted; nothing was saved", notify=True
            )
            return
        try:
            final = publish(part, self.settings.download_dir, t.safe_name)
            t.part = None
        except OSError as exc:
            self._fail(t, f"cannot save {t.safe_name}: {exc}", notify=True)
            return
        record = ReceivedFile(
            name=t.key,
            path=final,
            size=t.size,
            sha256=t.sha256,
            sender=t.peer_id,
            sender_name=t.sender_name,
            kind=t.kind,
            meta=t.meta,
        )
        t.record = record
        self.received[t.key] = record
        self._send(t.peer_id, "file-done", t.id, offset=t.size)
        self._finish(t, "done", "")
        self.emit("file_received", t.peer_id, record)

    # ============================================================ controls
    def on_control(self, peer_id: str, msg: protocol.FileControl) -> None:
        kind = msg.type
        out = self.outgoing.get((msg.id, peer_id))
        inc = self.incoming.get(msg.id)
        if inc is not None and inc.peer_id != peer_id:
            inc = None
        if kind == "file-accept" and out is not None and not out.finished:
            if msg.offset > out.size:
                self._fail(out, "receiver asked to resume past the end", notify=True)
                return
            self._cancel_resume_timer(out)
            out.accepted = True
            self._start_sending(out, msg.offset)
        elif kind == "file-ack" and out is not None:
            out.acked = max(out.acked, min(msg.offset, out.size))
            out._acked_event.set()
            self._progress(out, force=out.acked == out.size)
        elif kind == "file-done" and out is not None and not out.finished:
            out.bytes = out.size
            self._finish(out, "done", "")
            self.emit("file_sent", peer_id, {"id": out.id, "name": out.name, "size": out.size})
        elif kind == "file-decline" and out is not None and not out.finished:
            self._finish(out, "declined", msg.reason or "declined")
            self._failed_event(out, f"declined by {self.peer_name(peer_id)}: {msg.reason}")
        elif kind == "file-complete" and inc is not None and inc.state == "receiving":
            self._complete_incoming(inc)
        elif kind == "file-cancel":
            target = out if out is not None else inc
            if target is not None and not target.finished:
                self._fail(
                    target, f"cancelled by {self.peer_name(peer_id)}: {msg.reason}", notify=False
                )
        else:
            log.info("ignoring %s for transfer %s from %s", kind, msg.id, peer_id)

    async def cancel(self, t: _Record, reason: str) -> None:
        if not t.finished:
            self._fail(t, reason, notify=True)

    # ======================================================= link changes
    def on_peer_state(self, peer_id: str, state: str) -> None:
        if state == "reconnecting":
            for t in self._with(peer_id):
                if t.state in ("sending", "receiving", "completing", "offered"):
                    self._pause(t)
        elif state == "connected":
            for t in self._with(peer_id):
                if t.state == "interrupted" and isinstance(t, OutgoingTransfer):
                    if t.accepted:
                        # the receiver holds a part file: it answers with its byte count
                        offer = dataclasses.replace(t.offer, resume=True)
                    else:
                        # never accepted: there is nothing to resume, only an offer
                        # still waiting (or lost with the link), so it is sent again
                        # as itself and waits for an answer, like any offer
                        self._cancel_resume_timer(t)
                        t.state = "offered"
                        offer = t.offer
                    self.mesh.send(peer_id, offer.encode())
        elif state in ("lost", "closed"):
            for t in self._with(peer_id):
                self._fail(t, f"peer {self.peer_name(peer_id)} is gone ({state})", notify=False)

    def _with(self, peer_id: str) -> list[_Record]:
        records: list[_Record] = [t for t in self.outgoing.values() if t.peer_id == peer_id]
        records += [t for t in self.incoming.values() if t.peer_id == peer_id]
        return [t for t in records if not t.finished]

    def _pause(self, t: _Record) -> None:
        if isinstance(t, OutgoingTransfer) and t._task is not None:
            t._task.cancel()
            t._task = None
        if t.state == "offered" and isinstance(t, IncomingTransfer):
            return  # nothing started; the offer stays open
        t.state = "interrupted"
        self.emit("transfer_interrupted", t.peer_id, self._summary(t))

        async def expire() -> None:
            await asyncio.sleep(self.settings.resume_timeout)
            if not t.finished and t.state == "interrupted":
                self._fail(
                    t, f"link did not come back within {self.settings.resume_timeout}s", notify=True
                )

        self._cancel_resume_timer(t)
        t._resume_timer = self._tasks.spawn(expire(), f"resume-timer-{t.id}")

    def _resume_incoming(self, t: IncomingTransfer) -> None:
        self._cancel_resume_timer(t)
        if t._file is None:
            self._fail(t, "resume offered for a transfer that never started", notify=True)
            return
        t._file.flush()
        t.state = "receiving"
        t._acked = t.bytes
        t._last_data = time.monotonic()
        log.info("resuming %s from byte %d", t.name, t.bytes)
        self._send(t.peer_id, "file-accept", t.id, offset=t.bytes)

    async def _watch_stalls(self) -> None:
        """Fail accepted transfers that stopped bringing data (see ``stall_timeout``)."""
        while True:
            timeout = self.settings.stall_timeout
            period = 5.0 if timeout is None else min(5.0, max(0.05, timeout / 4))
            before = time.monotonic()
            await asyncio.sleep(period)
            now = time.monotonic()
            if timeout is None:
                continue
            if now - before > 2 * period + 1.0:
                # our own loop was blocked (a long cell without the network
                # thread): the silence was ours, not the senders'
                for t in self.incoming.values():
                    t._last_data = max(t._last_data, now)
                continue
            for t in list(self.incoming.values()):
                if t.state == "receiving" and now - t._last_data > timeout:
                    self._fail(t, f"no data for {timeout:g}s", notify=True)

    def _cancel_resume_timer(self, t: _Record) -> None:
        if t._resume_timer is not None:
            t._resume_timer.cancel()
            t._resume_timer = None

    # =========================================================== endings
    def _send(
        self, peer_id: str, kind: str, tid: str, *, offset: int = 0, reason: str = ""
    ) -> None:
        try:
            self.mesh.send(peer_id, protocol.FileControl(kind, tid, offset, reason).encode())
        except PeerUnavailable as exc:
            log.info("could not tell %s about %s: %s", peer_id, kind, exc)

    def _fail(self, t: _Record, reason: str, *, notify: bool) -> None:
        if t.finished:
            return
        if notify:
            self._send(t.peer_id, "file-cancel", t.id, reason=reason)
        if isinstance(t, OutgoingTransfer) and t._task is not None:
            if t._task is not asyncio.current_task():
                t._task.cancel()
            t._task = None
        if isinstance(t, IncomingTransfer):
            self._discard_part(t)
        self._finish(t, "failed", reason)
        self._failed_event(t, reason)

    def _failed_event(self, t: _Record, reason: str) -> None:
        self.emit("transfer_failed", t.peer_id, {**self._summary(t), "reason": reason})

    def _discard_part(self, t: IncomingTransfer) -> None:
        if t._file is not None:
            t._file.close()
            t._file = None
        if t.part is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t.part)
            t.part = None

    def _finish(self, t: _Record, state: str, reason: str) -> None:
        self._cancel_resume_timer(t)
        if isinstance(t, IncomingTransfer) and t.state in quota.ACTIVE_STATES:
            # a slot is free: a waiting auto-accepted offer may start (not from
            # inside this call, which may be in the middle of handling a message)
            asyncio.get_running_loop().call_soon(self._slot_freed)
        t.state = state
        t.reason = reason
        if not t._done.done():
            t._done.set_result(state)
        # keep a bounded history: a peer's offers must not grow memory for ever
        if isinstance(t, IncomingTransfer):
            quota.prune(self.incoming, self.settings.history)
        else:
            quota.prune(self.outgoing, self.settings.history)

    def _summary(self, t: _Record) -> dict[str, Any]:
        return {
            "id": t.id,
            "direction": t.direction,
            "name": t.name,
            "bytes": t.bytes,
            "total": t.size,
            "state": t.state,
        }

    def _progress(self, t: _Record, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - t._last_progress < self.settings.progress_interval:
            return
        t._last_progress = now
        done = t.acked if isinstance(t, OutgoingTransfer) else t.bytes
        self.emit(
            "file_progress",
            t.peer_id,
            {**self._summary(t), "bytes": done, "rate": t.rate(), "transfer": t},
        )

    async def close(self) -> None:
        self._closed = True
        for t in list(self.outgoing.values()) + list(self.incoming.values()):
            if not t.finished:
                self._fail(t, "this peer disconnected", notify=True)
        await self._tasks.aclose()
