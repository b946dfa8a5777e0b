"""A loss-tolerant congestion window for aiortc's SCTP (see :class:`LossTolerantWindow`).

Why this module exists: aiortc halves its window on every loss (Reno), so a
path with random loss (Wi-Fi) never carries more than a few packets per round
trip; this patch keeps the window at the path's measured capacity (Westwood+).
It hooks the association's private SACK handler, RTT update and T3 expiry."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .sctp_hook import SctpHook, install_once

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection


class LossTolerantWindow(SctpHook):
    """Keep SCTP's congestion window where the path's measured capacity puts
    it after a random loss, instead of halving it (TCP Westwood+), and let it
    grow by a share of itself while the path shows no queue.

    aiortc's SCTP answers every loss like Reno: the window is halved, then
    grows by one packet per round trip. On a path that drops packets at
    random (Wi-Fi, 1-2 %) there is a loss every few round trips, so the
    window never grows past a few packets and a 20 ms, 2 % path gave
    ~0.5 MB/s whatever the link could carry. This estimates the rate at
    which data is delivered (:attr:`bandwidth`: the highest of the last
    :attr:`PEAK_SAMPLES` samples, one per round trip, as BBR does; an
    average sank during each loss's recovery and cut the window a little at
    every loss) and, on a loss, sets the window to ``bandwidth * rtt_min``,
    what the path carried without a queue: a random loss on an idle path
    leaves the window where it was, while a loss from congestion (a queue
    built up, so the round trip grew past ``rtt_min``) cuts it to the path's
    real capacity, draining the queue. The window never ends above what it
    was before the loss nor below Reno's half, and a T3 timeout still drops
    it to one packet (only its slow-start threshold is kept at the estimate,
    so it climbs back quickly).

    Between losses Reno's one packet per round trip is slow to find a fast
    path's capacity again (at 20 ms and 1 % loss the window stayed near
    30 kB). While the smoothed round trip is within :attr:`QUEUE_FREE` of
    ``rtt_min`` (no queue is building) and the window is in use, it also
    grows by :attr:`GROWTH` of what each SACK acknowledges, about 12 % per
    round trip; once a queue builds, growth is Reno's again, and the loss
    that a full queue brings cuts the window to the capacity measured.

    Like :class:`TailLossProbe` it hooks methods of this one association
    (the SACK handler, the RTT update, the T3 expiry); nothing is changed on
    the wire."""

    PEAK_SAMPLES = 10
    """Bandwidth samples (one per round trip) whose highest is the estimate."""
    GROWTH = 1 / 8
    """Share of the bytes each SACK acknowledges added to the window while no
    queue builds (on top of Reno's growth)."""
    QUEUE_FREE = 1.25
    QUEUE_FREE_SLACK = 0.005
    """A smoothed round trip up to ``QUEUE_FREE * rtt_min + QUEUE_FREE_SLACK``
    shows no queue building (the slack: both ends' processing and delayed
    SACKs, which no queue explains)."""
    _NEEDS = (
        "_receive_sack_chunk",
        "_flight_size",
        "_update_advanced_peer_ack_point",
        "_update_rto",
        "_t3_expired",
        "_cwnd",
        "_ssthresh",
        "_fast_recovery_exit",
        "_sent_queue",
        "_srtt",
        "_loop",
    )

    def __init__(self, sctp: Any) -> None:
        super().__init__(sctp)
        self.rtt_min: float | None = None
        """Smallest round trip seen (seconds): the path without a queue."""
        self.samples: deque[float] = deque(maxlen=self.PEAK_SAMPLES)
        """The latest delivery rates measured (bytes/s), one per round trip."""
        self.holds = 0
        """Losses after which the window was kept above Reno's half."""
        self.boosts = 0
        """SACKs after which the window grew by :attr:`GROWTH` as well."""
        self._newly = 0
        self._in_use = False
        self._sample_bytes = 0
        self._sample_start = sctp._loop.time()
        self._in_sack = False
        self._cwnd_before = 0
        self._recovering_before = False
        receive_sack = sctp._receive_sack_chunk
        advance = sctp._update_advanced_peer_ack_point
        update_rto, expired = sctp._update_rto, sctp._t3_expired

        async def _receive_sack_chunk(chunk: Any) -> None:
            # aiortc adjusts the window and then calls
            # _update_advanced_peer_ack_point with no await in between, so
            # the flag cannot leak into another path.
            self._newly = self._acked(chunk)
            self._in_use = sctp._flight_size >= sctp._cwnd
            self._cwnd_before = sctp._cwnd
            self._recovering_before = sctp._fast_recovery_exit is not None
            self._in_sack = True
            try:
                await receive_sack(chunk)
            finally:
                self._in_sack = False

        def _update_advanced_peer_ack_point() -> None:
            advance()
            if self._in_sack:
                self._in_sack = False
                if not self._recovering_before and sctp._fast_recovery_exit is not None:
                    self._after_loss()
                else:
                    self._grow()

        def _update_rto(rtt: float) -> None:
            update_rto(rtt)
            if rtt > 0 and (self.rtt_min is None or rtt < self.rtt_min):
                self.rtt_min = rtt

        def _t3_expired() -> None:
            before = sctp._cwnd
            expired()
            sctp._ssthresh = max(sctp._ssthresh, min(before, self.estimate()))

        sctp._receive_sack_chunk = _receive_sack_chunk
        sctp._update_advanced_peer_ack_point = _update_advanced_peer_ack_point
        sctp._update_rto, sctp._t3_expired = _update_rto, _t3_expired

    @classmethod
    def install(cls, pc: RTCPeerConnection) -> LossTolerantWindow | None:
        """The loss response of ``pc``'s SCTP association (made once); ``None``
        (and one warning per process) if aiortc's internals moved."""
        return install_once(cls, pc, "_p2p_nb_loss_window", "every loss halves the window (Reno)")

    @property
    def bandwidth(self) -> float:
        """The path's delivery rate (bytes/s): the highest recent sample."""
        return max(self.samples, default=0.0)

    def estimate(self) -> int:
        """The path's capacity in bytes, ``bandwidth * rtt_min`` (0: unknown)."""
        if self.rtt_min is None:
            return 0
        return int(self.bandwidth * self.rtt_min)

    def _acked(self, chunk: Any) -> int:
        """The bytes this SACK reports delivered for the first time, in order
        or in a gap (during a loss's recovery the cumulative point stands
        still while data keeps arriving), counted towards one bandwidth
        sample per smoothed round trip."""
        sctp = self._sctp
        cumulative, gaps = chunk.cumulative_tsn, chunk.gaps
        newly = gap = 0
        for sent in sctp._sent_queue:  # in TSN order, as the gaps are
            pos = (sent.tsn - cumulative) % 2**32
            if pos == 0 or pos >= 2**31:  # at or before the cumulative point
                if not sent._acked:
                    newly += sent._book_size
                continue
            while gap < len(gaps) and gaps[gap][1] < pos:
                gap += 1
            if gap == len(gaps):
                break
            if gaps[gap][0] <= pos and not sent._acked:
                newly += sent._book_size
        self._sample_bytes += newly
        now = sctp._loop.time()
        span = now - self._sample_start
        srtt = sctp._srtt
        if srtt is not None and span >= max(srtt, 0.005):
            self.samples.append(self._sample_bytes / span)
            self._sample_bytes = 0
            self._sample_start = now
        return newly

    def _grow(self) -> None:
        """After a SACK without a new loss: grow by :attr:`GROWTH` of what it
        reported delivered, if the window is in use, past slow start and a
        loss's repair (growing during repairs was tried: the window doubled,
        but with several losses per round trip aiortc repaired so slowly that
        less arrived), and no queue is building."""
        sctp = self._sctp
        if not (self._newly and self._in_use):
            return
        if sctp._fast_recovery_exit is not None or sctp._cwnd <= sctp._ssthresh:
            return  # repairing a loss, or slow start (aiortc's growth is faster)
        if self.queue_free():
            sctp._cwnd += int(self._newly * self.GROWTH)
            self.boosts += 1

    def queue_free(self) -> bool:
        """Whether the smoothed round trip shows no queue building on the path."""
        srtt, rtt_min = self._sctp._srtt, self.rtt_min
        if srtt is None or rtt_min is None:
            return False
        return bool(srtt <= self.QUEUE_FREE * rtt_min + self.QUEUE_FREE_SLACK)

    def _after_loss(self) -> None:
        sctp = self._sctp
        halved = sctp._cwnd
        kept = max(halved, min(self._cwnd_before, self.estimate()))
        if kept > halved:
            self.holds += 1
            sctp._cwnd = sctp._ssthresh = kept
