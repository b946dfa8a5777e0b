"""A transmit for aiortc's SCTP that skips the walk through data in flight
(see :class:`QuickTransmit`).

Why this module exists: aiortc's ``_transmit`` walks everything in flight on
every acknowledgement, a fifth of a file sender's CPU. Its second half is
copied here, so it is pinned to the SHA-256 of the aiortc source it was
copied from (aiortc's, not ours) and stays off for any other aiortc."""

from __future__ import annotations

import hashlib
import inspect
import operator
import time
from typing import TYPE_CHECKING, Any

from aiortc.rtcsctptransport import USERDATA_MAX_LENGTH

from .sctp_hook import SctpHook, install_once

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

_MARKED = operator.attrgetter("_retransmit")


class QuickTransmit(SctpHook):
    """Skip aiortc's walk through everything in flight on each transmit when
    no chunk waits to be sent again.

    aiortc's ``_transmit`` runs on every acknowledgement and every send, and
    first walks the whole sent queue for chunks marked for retransmission:
    with 1 MB in flight, ~900 chunks per acknowledgement. py-spy put that
    walk at ~19 % of a file sender's CPU on loopback (``python -m
    bench.profile --file-mb 200``), more with a round trip's larger window;
    the sender's CPU is what limits p2p-nb on a fast link. Chunks are marked
    in three places only: a SACK that reports gaps (a chunk missed three
    times), the T3 timer's expiry, and :class:`TailLossProbe`. After each,
    :attr:`marked` is set and the next transmit is aiortc's own, after which
    it says whether a chunk is still marked. Otherwise only the second half
    of aiortc's ``_transmit`` runs (new chunks, within the congestion window),
    which is all aiortc's would do then. That half is a copy, so it is
    installed only over the ``_transmit`` whose source it was copied from
    (:attr:`SOURCE_SHA256`); any other aiortc keeps its own, with a warning,
    and ``tests/test_tail_loss_probe.py`` fails."""

    SOURCE_SHA256 = "aa8941d5f8f020e8b4e438e02084533dd78399da498638a013025252e5fe8115"
    """SHA-256 of aiortc 1.16.0's ``RTCSctpTransport._transmit`` source."""
    _NEEDS = (
        "_transmit",
        "_receive_sack_chunk",
        "_t3_expired",
        "_t3_start",
        "_t3_handle",
        "_send_chunk",
        "_sent_queue",
        "_outbound_queue",
        "_flight_size",
        "_flight_size_increase",
        "_cwnd",
        "_fast_recovery_exit",
        "_forward_tsn_chunk",
    )

    def __init__(self, sctp: Any) -> None:
        super().__init__(sctp)
        self.marked = True
        """A chunk may be marked for retransmission: aiortc's ``_transmit`` runs."""
        self.quick = 0
        """Transmits that skipped the walk."""
        self.full = 0
        """Transmits left to aiortc's own (a chunk was, or may have been, marked)."""
        transmit, receive_sack = sctp._transmit, sctp._receive_sack_chunk
        expired = sctp._t3_expired

        async def _transmit() -> None:
            if self.marked or sctp._forward_tsn_chunk is not None:
                self.full += 1
                try:
                    await transmit()
                finally:
                    self.marked = any(map(_MARKED, sctp._sent_queue))
                return
            self.quick += 1
            await self._send_new()

        async def _receive_sack_chunk(chunk: Any) -> None:
            if chunk.gaps:  # three misses mark a chunk
                self.marked = True
            await receive_sack(chunk)

        def _t3_expired() -> None:
            self.marked = True  # it marks everything in flight
            expired()

        sctp._transmit, sctp._receive_sack_chunk = _transmit, _receive_sack_chunk
        sctp._t3_expired = _t3_expired

    @classmethod
    def source_sha256(cls, sctp: Any) -> str:
        """SHA-256 of the source of ``sctp``'s class's ``_transmit``."""
        try:
            source = inspect.getsource(type(sctp)._transmit)
        except (AttributeError, OSError, TypeError):
            return ""
        return hashlib.sha256(source.encode()).hexdigest()

    @classmethod
    def missing(cls, sctp: Any) -> list[str]:
        """What this aiortc lacks for the quick path (empty: it can be installed)."""
        missing = super().missing(sctp)
        if not missing and cls.source_sha256(sctp) != cls.SOURCE_SHA256:
            missing.append("the _transmit QuickTransmit was copied from")
        return missing

    @classmethod
    def install(cls, pc: RTCPeerConnection) -> QuickTransmit | None:
        """The quick path of ``pc``'s SCTP association (made once); ``None``
        (and one warning per process) if aiortc's internals moved."""
        return install_once(
            cls, pc, "_p2p_nb_quick_transmit", "every transmit walks the data in flight"
        )

    @staticmethod
    def marked_on(sctp: Any) -> None:
        """Note that a chunk of ``sctp`` was just marked for retransmission."""
        quick = getattr(sctp, "_p2p_nb_quick_transmit", None)
        if isinstance(quick, QuickTransmit):
            quick.marked = True

    async def _send_new(self) -> None:
        """The second half of aiortc 1.16.0's ``_transmit``, unchanged."""
        sctp = self._sctp
        if sctp._fast_recovery_exit is not None:
            burst_size = 2 * USERDATA_MAX_LENGTH
        else:
            burst_size = 4 * USERDATA_MAX_LENGTH
        cwnd = min(sctp._flight_size + burst_size, sctp._cwnd)
        while sctp._outbound_queue and sctp._flight_size < cwnd:
            chunk = sctp._outbound_queue.popleft()
            sctp._sent_queue.append(chunk)
            sctp._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            await sctp._send_chunk(chunk)
            if not sctp._t3_handle:
                sctp._t3_start()
