"""Every reach into aiortc's and aioice's internals, in one module.

What they do not expose: the size of the UDP sockets' buffers, which kind of
candidate a connection ended up using, sockets a gather leaves behind a close
(these give up quietly if the internals move), four hooks into aiortc's SCTP
association (:class:`TailLossProbe`, :class:`LossTolerantWindow`,
:class:`QuickTransmit`, :class:`DelayedSack`: each logs once and stays off if
what it hooks moved, QuickTransmit also if ``_transmit``'s source changed;
``tests/test_tail_loss_probe.py`` fails loudly), and one DTLS certificate for
every connection of an app (this one fails loudly: the safety code's stability
depends on it, and ``tests/test_safety_code.py`` checks it against the
installed aiortc)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import inspect
import logging
import operator
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcsctptransport import USERDATA_MAX_LENGTH

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection, RTCSessionDescription

log = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 4 * 2**20
"""UDP buffer size asked for each ICE socket (the OS caps it at net.core.rmem_max)."""


def _ice_connection(pc: RTCPeerConnection) -> Any:
    """aioice's ``Connection`` under ``pc``; ``None`` if aiortc's internals moved."""
    try:
        return pc.sctp.transport.transport._connection  # type: ignore[union-attr]
    except AttributeError:
        return None


def enlarge_socket_buffers(pc: RTCPeerConnection) -> None:
    """Give the connection's UDP sockets room for bursts.

    With the default ~208 KiB receive buffer a 64 KiB-message stream overflows
    it, and aiortc's SCTP then stalls until its 1 s retransmission timer fires
    (seen here: a 1 MB transfer took 1.1 s instead of 30 ms). Best effort: it
    reaches into aiortc/aioice internals and gives up quietly if they move.
    """
    for stun in list(getattr(_ice_connection(pc), "_protocols", [])):
        sock = stun.transport.get_extra_info("socket") if stun.transport else None
        if sock is None:
            continue
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)


async def set_local_description(pc: RTCPeerConnection, description: RTCSessionDescription) -> None:
    """``pc.setLocalDescription(description)`` that leaves no socket open behind it.

    aioice binds its host sockets while it gathers and adds them to its
    connection only when a component's gathering ends. A ``close()`` that
    overtakes a gather (leaving a room while a link negotiates) empties the
    connection before those sockets are in it, so they stayed open until the
    loop closed ("unclosed resource <UDPTransport>"). What the gather added to
    a connection closed meanwhile is closed here."""
    try:
        await pc.setLocalDescription(description)
    finally:
        if pc.connectionState == "closed":
            await close_stray_sockets(pc)


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """``pc.close()`` that finishes even when its caller is cancelled.

    aiortc closes the SCTP and DTLS transports before the ICE sockets, with
    awaits in between: a close cancelled there (the app leaving while a
    link's worker replaces its connection) leaves the sockets open for good.
    So the close runs to its end, and only then does the cancellation go on."""
    closing = asyncio.ensure_future(pc.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait([closing])
        raise


async def close_stray_sockets(pc: RTCPeerConnection) -> None:
    """Close the sockets a gather added to ``pc``'s ICE connection after it was
    closed (see :func:`set_local_description`)."""
    connection = _ice_connection(pc)
    protocols = list(getattr(connection, "_protocols", []))
    for stun in protocols:
        with contextlib.suppress(Exception):
            await stun.close()
    if protocols:
        connection._protocols.clear()


def route_type(pc: RTCPeerConnection) -> str | None:
    """How the pair ICE nominated reaches the peer: ``relay`` when either end
    is a TURN relay address, else our end's type (``host``: a direct path;
    ``srflx``/``prflx``: through a NAT); ``None`` if unknown."""
    pair = getattr(_ice_connection(pc), "_nominated", {}).get(1)
    if pair is None:
        return None
    try:
        kinds = (str(pair.local_candidate.type), str(pair.remote_candidate.type))
    except AttributeError:
        return None
    return "relay" if "relay" in kinds else kinds[0]


def sdp_fingerprint(sdp: str) -> str | None:
    """The DTLS certificate fingerprint an SDP announces (``sha-256 AB:CD:...``)."""
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:"):
            return line.split(":", 1)[1].strip().lower()
    return None


class StableCertificate:
    """One DTLS certificate for every connection an app makes.

    aiortc makes a new certificate per ``RTCPeerConnection``, so the
    fingerprints (and with them the safety code) would change on every
    reconnect, and users could not tell a reconnect from a man in the middle.
    With one certificate per app, a reconnect shows the same fingerprints and
    keeps its safety code; a new code means another certificate at the other
    end. aiortc's certificates last 30 days: a fresh one is made a day before.
    """

    RENEW_BEFORE = datetime.timedelta(days=1)

    def __init__(self) -> None:
        self._cert = RTCCertificate.generateCertificate()

    def current(self) -> RTCCertificate:
        now = datetime.datetime.now(datetime.UTC)
        if self._cert.expires - now < self.RENEW_BEFORE:
            self._cert = RTCCertificate.generateCertificate()
        return self._cert

    def apply(self, pc: RTCPeerConnection) -> None:
        """Make ``pc`` use the app's certificate (before any description is made).

        Reaches into aiortc's private ``__certificates`` list: raises
        ``RuntimeError`` if aiortc no longer has it, rather than silently
        falling back to a certificate per connection."""
        attr = "_RTCPeerConnection__certificates"
        certs = getattr(pc, attr, None)
        if not isinstance(certs, list) or not all(isinstance(c, RTCCertificate) for c in certs):
            raise RuntimeError(
                "aiortc's RTCPeerConnection no longer keeps its DTLS certificates in "
                f"{attr}: p2p_nb/ice.py must be updated for this aiortc version"
            )
        setattr(pc, attr, [self.current()])


class _SctpHook:
    """What every hook into aiortc's SCTP association has: the internals it
    needs, and the sends it starts from timers."""

    _NEEDS: tuple[str, ...] = ()
    _warned = False

    def __init__(self, sctp: Any) -> None:
        self._sctp = sctp
        self._tasks: set[asyncio.Future[None]] = set()

    @classmethod
    def missing(cls, sctp: Any) -> list[str]:
        """The internals this aiortc lacks (empty: the hook can be installed)."""
        return [name for name in cls._NEEDS if not hasattr(sctp, name)]

    def _spawn(self, send: Awaitable[None], what: str) -> None:
        """Run ``send`` from a timer callback, kept until done; a failure (the
        association closed meanwhile) is only logged."""
        task = asyncio.ensure_future(send)
        self._tasks.add(task)

        def done(task: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s failed: %r", what, task.exception())

        task.add_done_callback(done)


_Hook = TypeVar("_Hook", bound=_SctpHook)


def _install_once(cls: type[_Hook], pc: RTCPeerConnection, attr: str, without: str) -> _Hook | None:
    """``cls``'s hooks on ``pc``'s SCTP association, made once and kept in
    ``attr``; ``None`` (and one warning per class and process, saying what is
    lost ``without`` them) if aiortc's internals moved."""
    sctp = getattr(pc, "sctp", None)
    if sctp is None:
        return None
    existing = getattr(sctp, attr, None)
    if isinstance(existing, cls):
        return existing
    missing = cls.missing(sctp)
    if missing:
        if not cls._warned:
            cls._warned = True
            log.warning(
                "aiortc's SCTP lacks %s: %s; p2p_nb/ice.py must follow this aiortc",
                ", ".join(missing),
                without,
            )
        return None
    hooks = cls(sctp)
    setattr(sctp, attr, hooks)
    return hooks


class TailLossProbe(_SctpHook):
    """Recover a lost last packet in about two round trips instead of aiortc's
    one-second minimum retransmission timeout.

    SCTP repairs a loss quickly (fast retransmit) only when three later packets
    arrive and their acknowledgements report the gap. A lone chat message, a
    transfer's acknowledgement (the only thing its receiver sends) or the end
    of a send window has no later packets, so a loss there waits out the T3
    timer, at least ``SCTP_RTO_MIN`` = 1 s: a 2 % lossy path gave chat a
    1003 ms p99 and cut file throughput to a quarter. Like TCP's tail-loss
    probe (RFC 8985), when nothing new is acknowledged for ``2 * SRTT`` (at
    least :attr:`MIN_PTO`) while data is outstanding, the earliest
    unacknowledged chunk is sent again, without touching the congestion window
    (a needless probe costs one duplicate chunk, which the receiver drops). At
    most :attr:`MAX_PROBES` probes (each waiting twice as long) until
    something new is acknowledged; past that, T3 takes over as before, with
    its backoff (a dark path is not flooded).

    It hooks the association's T3 timer methods on this one instance (they
    are started, restarted on progress and cancelled exactly when a probe
    timer must be); nothing is changed on the wire."""

    MIN_PTO = 0.02
    MAX_PROBES = 2
    _NEEDS = (
        "_t3_start",
        "_t3_restart",
        "_t3_cancel",
        "_t3_expired",
        "_transmit",
        "_flight_size_decrease",
        "_sent_queue",
        "_srtt",
        "_rto",
        "_loop",
        "_last_sacked_tsn",
    )

    def __init__(self, sctp: Any) -> None:
        super().__init__(sctp)
        self._handle: asyncio.TimerHandle | None = None
        self._streak = 0
        self._acked_at: int | None = None
        self.probes = 0
        """Chunks this probe sent again."""
        self.timeouts = 0
        """T3 expiries of the association since the probe was installed."""
        start, restart = sctp._t3_start, sctp._t3_restart
        cancel, expired = sctp._t3_cancel, sctp._t3_expired

        def _start() -> None:
            start()
            self._arm()

        def _restart() -> None:
            restart()
            self._arm()

        def _cancel() -> None:
            cancel()
            self._disarm()

        def _expired() -> None:
            self.timeouts += 1
            self._disarm()  # T3 resends everything now
            expired()

        sctp._t3_start, sctp._t3_restart = _start, _restart
        sctp._t3_cancel, sctp._t3_expired = _cancel, _expired

    @classmethod
    def install(cls, pc: RTCPeerConnection) -> TailLossProbe | None:
        """The probe of ``pc``'s SCTP association (made once); ``None`` (and one
        warning per process) if aiortc's internals moved."""
        return _install_once(
            cls,
            pc,
            "_p2p_nb_tail_loss_probe",
            "no tail-loss probe (a lost last packet waits for the 1 s timer)",
        )

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self._disarm()
        sctp = self._sctp
        acked = sctp._last_sacked_tsn
        if acked != self._acked_at:  # progress: a fresh series of probes
            self._acked_at = acked
            self._streak = 0
        srtt = sctp._srtt
        if srtt is None or self._streak >= self.MAX_PROBES:
            return
        pto = max(2 * srtt, self.MIN_PTO) * 2**self._streak
        if pto < sctp._rto:
            self._handle = sctp._loop.call_later(pto, self._fire)

    def _fire(self) -> None:
        self._handle = None
        sctp = self._sctp
        chunk = next(
            (c for c in sctp._sent_queue if not (c._acked or c._retransmit or c._abandoned)),
            None,
        )
        if chunk is None:
            return
        self._streak += 1
        self.probes += 1
        chunk._retransmit = True
        QuickTransmit.marked_on(sctp)
        sctp._flight_size_decrease(chunk)
        self._spawn(sctp._transmit(), "tail-loss probe: transmit")


class LossTolerantWindow(_SctpHook):
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
        return _install_once(cls, pc, "_p2p_nb_loss_window", "every loss halves the window (Reno)")

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


_MARKED = operator.attrgetter("_retransmit")


class QuickTransmit(_SctpHook):
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
        return _install_once(
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


class DelayedSack(_SctpHook):
    """Acknowledge every second packet of data, not every one.

    aiortc's SCTP sends a SACK for every packet that carries data: on a file
    transfer half the packets on the path are acknowledgements, each one
    built, encrypted and sent by the receiver (py-spy: ~22 % of a receiving
    kernel's CPU) and decrypted and processed by the sender. RFC 9260
    (section 6.2) asks for a SACK for at least every second packet, and
    within 200 ms of the first unacknowledged one. So a SACK goes out at once
    on the second packet, or when the packet reveals a gap or a duplicate
    (fast retransmit depends on those), and otherwise at most :attr:`DELAY`
    later: a lone packet (a chat message) is acknowledged 2 ms later, far
    below the sender's tail-loss probe (at least 20 ms) and T3 timer (1 s).
    (Sending the SACK once the packets already read were handled was tried
    first: the receiver drains its queue between most packets, so that
    saved nothing.) The sender's slow start grows by one packet per SACK,
    so it is slower from a link's first transfer on (1.5 times instead of twice per
    round trip), as with any peer that delays its acknowledgements."""

    EVERY = 2
    DELAY = 0.002
    """At most this long (seconds) between a packet and its SACK."""
    _NEEDS = ("_send_sack", "_sack_needed", "_sack_misordered", "_sack_duplicates", "_loop")

    def __init__(self, sctp: Any) -> None:
        super().__init__(sctp)
        self._owed = 0
        self._timer: asyncio.TimerHandle | None = None
        self.packets = 0
        """Packets received that asked for a SACK."""
        self.sacks = 0
        """SACKs sent."""
        self.deferred = 0
        """Packets whose SACK waited for the next packet or the timer."""
        send_sack = sctp._send_sack

        async def _send_sack() -> None:
            self.packets += 1
            self._owed += 1
            if self._owed >= self.EVERY or sctp._sack_misordered or sctp._sack_duplicates:
                await self._send_now(send_sack)
                return
            self.deferred += 1
            # One timer at a time, not cancelled by a SACK sent meanwhile: it
            # may fire early for a later packet (harmless), never late.
            if self._timer is None:
                self._timer = sctp._loop.call_later(self.DELAY, self._expired, send_sack)

        sctp._send_sack = _send_sack

    @classmethod
    def install(cls, pc: RTCPeerConnection) -> DelayedSack | None:
        """The SACK policy of ``pc``'s SCTP association (made once); ``None``
        (and one warning per process) if aiortc's internals moved."""
        return _install_once(cls, pc, "_p2p_nb_delayed_sack", "a SACK for every packet")

    async def _send_now(self, send_sack: Callable[[], Awaitable[None]]) -> None:
        self._owed = 0
        self.sacks += 1
        await send_sack()

    def _expired(self, send_sack: Callable[[], Awaitable[None]]) -> None:
        self._timer = None
        if not (self._owed and self._sctp._sack_needed):
            return
        self._spawn(self._send_now(send_sack), "delayed SACK: send")
