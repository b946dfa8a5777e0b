"""The full mesh: one RTCPeerConnection and one data channel per remote peer.

Glare-free by rule: of two peers, the one with the smaller peer id makes the
offer, so both never offer at once; after a link drops it is also the one that
offers again (with backoff), while the other waits for that offer (and asks for
it with an ``invite`` signal). Signals for a peer are handled one at a time, in
arrival order, by that link's worker task.

Every link is watched: a ping goes out every ``ping_interval`` and a link that
has heard nothing for ``pong_timeout`` counts as failed. When direct attempts
keep failing (UDP blocked between two peers), the offerer switches the pair to
a relay: through a third peer that offers the ``relay`` service and has direct
links to both (each frame wrapped in a ``relay-frame`` message), or else
through the signaling server's Socket.IO connection. The same messages go, in
the same order; both sides then show the link as ``relayed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from . import protocol
from .backoff import Backoff
from .errors import P2PError, PeerUnavailable, ProtocolError, SignalingError
from .tasks import TaskSet

log = logging.getLogger(__name__)

SendSignal = Callable[[str, dict[str, Any]], Awaitable[None]]
SendRelay = Callable[[str, str | bytes], Awaitable[None]]
"""Hand one data-channel frame to the signaling server's relay for a peer."""
RelayPeers = Callable[[], list[str]]
"""Peer ids that advertise the ``relay`` service."""
OffersRelay = Callable[[], bool]
"""Whether we advertise the ``relay`` service (and so forward others' frames)."""
OnEvent = Callable[[str, str, Any], None]
"""Callback (event name, peer id, data) towards the app."""

LINK_STATES = (
    "new",
    "connecting",
    "connected",
    "relayed",
    "reconnecting",
    "limited",
    "lost",
    "closed",
)
OPEN_STATES = frozenset({"connected", "relayed"})
"""States in which messages flow (directly, or through the signaling relay)."""
ACTIVE_STATES = frozenset({"connecting", "connected", "relayed", "reconnecting"})
"""States that count against ``max_connections``."""
MAX_OUTBOX = 1000
"""Messages held per peer while its link is opening or re-opening."""
MAX_UNACKED = 10_000
"""Chat frames a link keeps until the peer confirms them with a ``chat-ack``:
a link that fails loses what its data channel held, so these go again, first,
when it re-opens (the receiver drops any it had, by ``seq``)."""
ACK_DELAY = 0.05
"""A ``chat-ack`` joins the link's next batch of frames, or goes alone after
this many seconds: it never costs a data-channel message of its own ahead of,
or right behind, a reply, so round trips do not pay for it."""
LOW_WATER = 256 * 1024
"""``bufferedAmountLowThreshold``: senders waiting for room wake below this."""
BATCH_MAX_CHARS = 16_000
"""Text frames sent during one turn of the event loop leave together, joined by
newlines, in one data-channel message of at most this many characters (so at
most 64 000 bytes, under the 64 KiB message limit, whatever the script).
aiortc's cost is per SCTP message (its sender rescans every message in flight
on each acknowledgement), so a burst of chat costs one message instead of
hundreds. A frame sent on an idle link (nothing batched, nothing buffered)
leaves at once, so a lone message waits for nothing."""
PEER_RELAY_HIGH_WATER = 1024 * 1024
"""A link relayed through a peer hands frames to that peer's data channel while
it buffers at most this much."""


@dataclass(frozen=True)
class ReconnectPolicy(Backoff):
    """How hard a dropped link is retried before the peer is reported lost."""

    max_attempts: int = 6
    attempt_timeout: float = 15.0
    """An attempt that has not opened its channel by then counts as failed."""


@dataclass(frozen=True)
class MeshSettings:
    """Liveness, quality reporting and fallback of every link (all in seconds)."""

    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    ping_interval: float = 2.0
    """A ``ping`` goes to every open link this often; its ``pong`` gives the RTT."""
    pong_timeout: float = 10.0
    """A link that has received nothing (no pong, no data) for this long has failed."""
    quality_interval: float | None = 5.0
    """Period of the ``quality`` event (one per peer); ``None``: no events."""
    relay: bool = True
    """Fall back to a relay (a peer offering the ``relay`` service, else the
    signaling server) when direct attempts keep failing."""
    relay_after: int = 2
    """Failed direct attempts in a row before the offerer switches a link to a relay."""
    max_relay_queue: int = 4 * 2**20
    """Bytes a relayed link buffers before senders wait (its ``bufferedAmount``)."""


SOCKET_BUFFER_BYTES = 4 * 2**20
"""UDP buffer size asked for each ICE socket (the OS caps it at net.core.rmem_max)."""


def enlarge_socket_buffers(pc: RTCPeerConnection) -> None:
    """Give the connection's UDP sockets room for bursts.

    With the default ~208 KiB receive buffer a 64 KiB-message stream overflows
    it, and aiortc's SCTP then stalls until its 1 s retransmission timer fires
    (seen here: a 1 MB transfer took 1.1 s instead of 30 ms). Best effort: it
    reaches into aiortc/aioice internals and gives up quietly if they move.
    """
    try:
        connection = pc.sctp.transport.transport._connection  # type: ignore[union-attr]
        stun_protocols = list(connection._protocols)
    except AttributeError:
        return
    for stun in stun_protocols:
        sock = stun.transport.get_extra_info("socket") if stun.transport else None
        if sock is None:
            continue
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)


@dataclass
class LinkStatus:
    peer_id: str
    name: str
    state: str
    initiator: bool
    ice_state: str
    connected_at: float | None
    queued: int
    buffered: int
    reconnects: int
    rtt: float | None
    transport: str = "none"
    """``direct`` (WebRTC data channel), ``relay`` (through a relay) or ``none``."""
    limited_reason: str | None = None
    """Why the link is ``limited`` (whose ``max_connections`` it would exceed)."""
    relay_via: str | None = None
    """On a relayed link: the id of the peer relaying it (``None``: the signaling server)."""


@dataclass(frozen=True)
class ConnectionQuality:
    """How one link is doing, as measured by this peer."""

    peer_id: str
    state: str
    transport: str
    rtt: float | None
    """Round-trip time of our last ping over the link, in seconds."""
    stats_rtt: float | None
    """aiortc's own estimate (SCTP smoothed RTT), where available."""
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    buffered: int
    """Bytes waiting in the send buffer now."""
    queued: int
    """Messages held while the link is down."""
    connected_for: float | None
    """Seconds since the link (re)opened; ``None`` while it is not open."""
    reconnects: int
    last_heard: float | None
    """Seconds since anything arrived on the link."""


class RelayChannel:
    """Stands in for the data channel when a link goes through a relay.

    Same surface as the part of ``RTCDataChannel`` the link uses
    (``readyState``, ``bufferedAmount``, ``send``); frames go out one at a time,
    in order. ``via`` is ``None`` for the signaling relay (each frame
    acknowledged by the server before the next), else the id of the peer that
    relays: each frame goes, wrapped in a ``relay-frame`` message, on our
    (ordered) data channel to that peer, which forwards it in arrival order.
    """

    label = protocol.CHANNEL_LABEL

    def __init__(self, link: PeerLink, via: str | None = None) -> None:
        self.link = link
        self.via = via
        self.generation = link.generation
        self.readyState = "open"
        self.bufferedAmount = 0
        self._queue: deque[str | bytes] = deque()
        self._ready = asyncio.Event()
        link.mesh.spawn(self._pump(), f"relay-{link.peer_id}")

    def send(self, data: str | bytes) -> None:
        if self.readyState != "open":
            raise PeerUnavailable(f"relay to {self.link.peer_id} is closed")
        self._queue.append(data)
        self.bufferedAmount += len(data)
        self._ready.set()

    async def _pump(self) -> None:
        mesh = self.link.mesh
        failures = 0
        while self.readyState == "open":
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            data = self._queue[0]
            if self.via is not None:
                if not await self._through_peer(self.via, data):
                    return
                self._queue.popleft()
                self.bufferedAmount -= len(data)
                self.link._notify()
                continue
            try:
                assert mesh.send_relay is not None
                await mesh.send_relay(self.link.peer_id, data)
            except P2PError as exc:
                # rate limited, or signaling is reconnecting: keep the frame, retry
                failures += 1
                log.info("relay to %s: %s (retrying)", self.link.peer_id, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if self._queue and self._queue[0] is data:
                self._queue.popleft()
                self.bufferedAmount -= len(data)
            self.link._notify()

    async def _through_peer(self, via: str, data: str | bytes) -> bool:
        """Hand one frame to the relaying peer's data channel (False: the route is
        gone and the link has been failed; the frame stays queued)."""
        mesh = self.link.mesh
        while True:
            if self.readyState != "open":
                return False
            relay = mesh.links.get(via)
            channel = relay.channel if relay is not None else None
            if (
                relay is None
                or relay.state != "connected"
                or channel is None
                or isinstance(channel, RelayChannel)
                or channel.readyState != "open"
            ):
                self.link._attempt_failed(self.generation, f"relay peer {via} is gone")
                return False
            if channel.bufferedAmount <= PEER_RELAY_HIGH_WATER:
                break
            await relay._wake.wait()
        try:
            relay._transmit(protocol.RelayFrame(data=data, to=self.link.peer_id).encode())
        except Exception as exc:  # a channel closing under us: same as a lost route
            log.info("relay through %s to %s: %s", via, self.link.peer_id, exc)
            self.link._attempt_failed(self.generation, f"relay peer {via} failed")
            return False
        return True

    def close(self) -> list[str | bytes]:
        """Stop; returns the frames not yet handed to the server (or relaying peer)."""
        self.readyState = "closed"
        self._ready.set()
        left = list(self._queue)
        self._queue.clear()
        self.bufferedAmount = 0
        return left


class PeerLink:
    """The link to one remote peer; survives the RTCPeerConnections it goes through."""

    def __init__(self, mesh: Mesh, peer_id: str, name: str) -> None:
        self.mesh = mesh
        self.peer_id = peer_id
        self.name = name
        self.initiator = mesh.local_id < peer_id
        self.state = "new"
        self.connected_at: float | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | RelayChannel | None = None
        self._relay_pending: RelayChannel | None = None
        self.generation = 0
        self._failed_generation = -1
        self.attempts = 0
        self.reconnects = 0
        self.rtt: float | None = None
        self.stats_rtt: float | None = None
        self.limited_reason: str | None = None
        self.limited_here = False
        """Limited by our own ``max_connections`` (not the peer's)."""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.frames_sent = 0
        """Data-channel messages (a batch of text frames counts once)."""
        self.last_heard: float | None = None
        self.outbox: deque[str | bytes] = deque()
        self._batch: list[str] = []
        self._batch_chars = 0
        self.unacked: deque[tuple[int, str]] = deque(maxlen=MAX_UNACKED)
        """(seq, frame) of chat frames sent and not yet confirmed by the peer."""
        self._ack_due: int | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()

    @property
    def transport(self) -> str:
        if isinstance(self.channel, RelayChannel):
            return "relay"
        return "direct" if self.channel is not None else "none"

    @property
    def relay_via(self) -> str | None:
        """The peer relaying this link (``None``: direct, or the signaling relay)."""
        return self.channel.via if isinstance(self.channel, RelayChannel) else None

    # --------------------------------------------------------------- state
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("%s link %s: %s -> %s", self.mesh.local_id, self.peer_id, self.state, state)
        old, self.state = self.state, state
        self._notify()
        self.mesh.on_event("peer_state", self.peer_id, {"old": old, "new": state})
        if state in OPEN_STATES:
            self.connected_at = time.time()
            self.last_heard = time.monotonic()
            self.mesh.on_event(
                "peer_connected", self.peer_id, {"name": self.name, "transport": self.transport}
            )
        else:
            self.connected_at = None
        if state == "reconnecting":
            self.mesh.on_event("peer_reconnecting", self.peer_id, {"attempt": self.attempts})
        elif state in ("lost", "closed", "limited"):
            if state == "lost":
                self.mesh.on_event("peer_lost", self.peer_id, {"name": self.name})
            self._unbatch()
            self.unacked.clear()
            if self.outbox:
                undelivered = list(self.outbox)
                self.outbox.clear()
                self.mesh.on_event("undelivered", self.peer_id, undelivered)
        if old in ACTIVE_STATES and state not in ACTIVE_STATES:
            self.mesh._capacity_changed()
        if old == "connected":
            self.mesh._relay_route_down(self.peer_id)
        self.mesh._report_changed()

    def _notify(self) -> None:
        """Wake every coroutine waiting in :meth:`wait_writable`."""
        self._wake.set()
        self._wake = asyncio.Event()

    def _watch(self, generation: int) -> None:
        async def watchdog() -> None:
            await asyncio.sleep(self.mesh.policy.attempt_timeout)
            if self.generation == generation and self.state in ("connecting", "reconnecting"):
                self._attempt_failed(generation, "timed out")

        self.mesh.spawn(watchdog(), f"watchdog-{self.peer_id}-{generation}")

    def _attempt_failed(self, generation: int, why: str) -> None:
        """The current connection is gone: retry (the initiator offers) or give up."""
        if generation != self.generation or generation == self._failed_generation:
            return
        if self.mesh.closing:
            return
        if self.state in ("closed", "lost", "limited"):
            return
        self._failed_generation = generation
        self.attempts += 1
        log.info(
            "link %s -> %s dropped (%s), attempt %d",
            self.mesh.local_id,
            self.peer_id,
            why,
            self.attempts,
        )
        self._drop_channel()
        if self.attempts > self.mesh.policy.max_attempts:
            self._give_up()
            return
        self._set_state("reconnecting")
        self._schedule_retry()

    def _drop_channel(self) -> None:
        """Forget the channel of a failed attempt; frames a relay still held go back
        to the front of the outbox, so nothing is lost and order is kept."""
        self._unbatch()
        channel, self.channel = self.channel, None
        pending, self._relay_pending = self._relay_pending, None
        for relay in (channel, pending):
            if isinstance(relay, RelayChannel):
                self.outbox.extendleft(reversed(relay.close()))

    def _schedule_retry(self) -> None:
        generation = self.generation
        if self.initiator:
            delay = self.mesh.policy.delay(self.attempts)
            use_relay = (
                self.mesh.settings.relay
                and self.attempts >= self.mesh.settings.relay_after
                and (
                    self.mesh.send_relay is not None
                    or self.mesh.relay_peer_for(self.peer_id) is not None
                )
            )

            async def later() -> None:
                await asyncio.sleep(delay)
                self.signals.put_nowait({"type": "_relay" if use_relay else "_reconnect"})

            self.mesh.spawn(later(), f"reconnect-{self.peer_id}")
        else:
            self.mesh.spawn(self._invite(), f"invite-{self.peer_id}")

            async def wait_for_offer() -> None:
                # Only the initiator offers; count its silence as failed attempts.
                while True:
                    await asyncio.sleep(self.mesh.policy.attempt_timeout)
                    if self.generation != generation or self.state != "reconnecting":
                        return
                    self.attempts += 1
                    if self.attempts > self.mesh.policy.max_attempts:
                        self._give_up()
                        return

            self.mesh.spawn(wait_for_offer(), f"await-offer-{self.peer_id}")

    async def _invite(self) -> None:
        """Ask the offerer to (re)connect: it may not have noticed the drop."""
        with contextlib.suppress(P2PError):
            await self.mesh.send_signal(self.peer_id, {"type": "invite"})

    def _give_up(self) -> None:
        self._set_state("lost")
        self.mesh.spawn(self._close_pc(), f"close-{self.peer_id}")

    def restart(self) -> bool:
        """Start over on a lost (or limited) link; True if an attempt was started."""
        if self.state not in ("lost", "limited") or self.mesh.closing:
            return False
        if not self.mesh.has_capacity():
            return False
        self.attempts = 0
        self.limited_reason = None
        self._set_state("reconnecting")
        if self.initiator:
            self.signals.put_nowait({"type": "_reconnect"})
        else:
            self._schedule_retry()
        return True

    # ------------------------------------------------------ peer connection
    async def _new_pc(self) -> RTCPeerConnection:
        await self._close_pc()
        self.generation += 1
        gen = self.generation
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.mesh.ice_servers)))
        self.pc = pc

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._attempt_failed(gen, f"connection {pc.connectionState}")

        pc.on("datachannel", lambda ch: self._attach_channel(ch, gen))
        self._watch(gen)
        return pc

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        self._drop_channel()
        self.generation += 1  # callbacks of the old connection are ignored from here
        if pc is not None:
            await pc.close()

    def _attach_channel(self, channel: RTCDataChannel, gen: int) -> None:
        if gen != self.generation:
            return
        if channel.label != protocol.CHANNEL_LABEL:
            log.warning("peer %s opened unexpected channel %r", self.peer_id, channel.label)
            return
        self.channel = channel
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._notify)
        channel.on("close", lambda: self._attempt_failed(gen, "data channel closed"))
        if channel.readyState == "open":
            self._on_open(gen)
        else:
            channel.on("open", lambda: self._on_open(gen))

    def _on_open(self, gen: int) -> None:
        if gen != self.generation or self.channel is None:
            return
        if self.pc is not None:
            enlarge_socket_buffers(self.pc)
        self._resend_unacked()
        self._flush()
        if self.attempts:
            self.reconnects += 1
        self.attempts = 0
        self._set_state("connected" if self.transport == "direct" else "relayed")

    def _resend_unacked(self) -> None:
        """Chat frames a previous channel took but the peer never confirmed go
        first; the outbox (frames never sent) follows in its own order."""
        queued = {id(frame) for frame in self.outbox}
        again = [frame for _, frame in self.unacked if id(frame) not in queued]
        if again:
            log.info("link %s: sending %d unconfirmed messages again", self.peer_id, len(again))
            self.outbox.extendleft(reversed(again))

    def acked(self, seq: int) -> None:
        """The peer has every chat frame up to ``seq``."""
        while self.unacked and self.unacked[0][0] <= seq:
            self.unacked.popleft()
        self._notify()

    def _ack_later(self, seq: int) -> None:
        """Confirm chat up to ``seq`` soon (see :data:`ACK_DELAY`): one
        ``chat-ack`` covers every message received until then."""
        if self._ack_due is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)
        self._ack_due = max(seq, self._ack_due or 0)

    def _send_ack(self) -> None:
        seq, self._ack_due = self._ack_due, None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if seq is not None:
            with contextlib.suppress(PeerUnavailable):
                self.send(protocol.ChatAck(seq).encode())

    def _flush(self) -> None:
        assert self.channel is not None
        while self.outbox:
            self._transmit(self.outbox.popleft())

    def _transmit(self, data: str | bytes) -> None:
        """Hand one frame to the open channel: text joins this loop turn's batch
        (see :data:`BATCH_MAX_CHARS`); anything else goes after the batch, so
        the order of every frame is kept."""
        assert self.channel is not None
        if isinstance(data, str) and len(data) < BATCH_MAX_CHARS:
            if not self._batch and self.channel.bufferedAmount == 0:
                self._send_frame(data, 1)  # an idle link: no reason to wait
                return
            if self._batch_chars + len(data) >= BATCH_MAX_CHARS:
                self._send_batch()
            if not self._batch:
                asyncio.get_running_loop().call_soon(self._send_batch)
            self._batch.append(data)
            self._batch_chars += len(data) + 1
        else:
            self._send_batch()
            self._send_frame(data, 1)

    def _send_batch(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        self._batch, self._batch_chars = [], 0
        if self.channel is None or self.channel.readyState != "open":
            self.outbox.extendleft(reversed(batch))  # sent again when a channel opens
            return
        self._send_frame(batch[0] if len(batch) == 1 else "\n".join(batch), len(batch))

    def _send_frame(self, data: str | bytes, messages: int) -> None:
        assert self.channel is not None
        self.channel.send(data)
        self.frames_sent += 1
        self.bytes_sent += len(data)
        self.messages_sent += messages

    def _unbatch(self) -> None:
        """Frames of the unsent batch go back to the front of the outbox."""
        batch = self._batch
        self._batch, self._batch_chars = [], 0
        self.outbox.extendleft(reversed(batch))

    # ----------------------------------------------------------------- relay
    async def _start_relay(self) -> None:
        """Offerer: close the direct attempt and ask the peer to relay with us,
        through a peer offering the ``relay`` service if there is one, else
        through the signaling server (else it is a direct attempt again)."""
        if self.state != "reconnecting":
            return
        via = self.mesh.relay_peer_for(self.peer_id)
        if via is None and self.mesh.send_relay is None:
            await self._offer()
            return
        await self._close_pc()
        self.generation += 1
        gen = self.generation
        relay = RelayChannel(self, via)
        self._relay_pending = relay
        relay.send(protocol.RelayOpen().encode())
        log.info(
            "link %s -> %s: trying the relay through %s",
            self.mesh.local_id,
            self.peer_id,
            f"peer {via}" if via is not None else "the signaling server",
        )
        self._watch(gen)

    def _relayed_through(self, via: str | None) -> bool:
        return isinstance(self.channel, RelayChannel) and self.channel.via == via

    async def _accept_relay(self, via: str | None = None) -> None:
        """Answerer: the offerer relays (through ``via``, or signaling); answer once
        and switch."""
        if self.state == "closed" or self._relayed_through(via):
            return
        if self.state == "limited" and not self.mesh.has_capacity(excluding=self):
            return
        await self._close_pc()
        self.generation += 1
        self.channel = RelayChannel(self, via)
        self.channel.send(protocol.RelayOpen().encode())
        self._on_open(self.generation)

    def _relay_confirmed(self) -> None:
        """Offerer: the peer answered our relay-open."""
        relay, self._relay_pending = self._relay_pending, None
        if relay is None:
            return
        self.channel = relay
        self._on_open(self.generation)

    def _relay_lost(self, via: str) -> None:
        """The peer relaying this link is gone: fail it (the retry picks another route)."""
        for relay in (self.channel, self._relay_pending):
            if isinstance(relay, RelayChannel) and relay.via == via:
                self._attempt_failed(relay.generation, f"relay peer {via} is gone")
                return

    # ------------------------------------------------------------ receiving
    def _on_message(self, data: str | bytes, route: str | None = None) -> None:
        """A frame from the peer: ``route`` is ``None`` on our data channel, ``""``
        through the signaling relay, else the id of the peer that relayed it."""
        self.bytes_received += len(data)
        self.last_heard = time.monotonic()
        if isinstance(data, bytes):
            self.messages_received += 1
            self.mesh.on_event("binary", self.peer_id, data)
        elif "\n" in data:  # a batch (JSON text never holds a raw newline)
            for part in data.split("\n"):
                self._on_text(part, route)
        else:
            self._on_text(data, route)

    def _on_text(self, data: str, route: str | None) -> None:
        self.messages_received += 1
        try:
            msg = protocol.decode(data)
        except ProtocolError as exc:
            log.warning("bad message from %s: %s", self.peer_id, exc)
            self.mesh.on_event("error", self.peer_id, exc)
            return
        if isinstance(msg, protocol.Ping):
            self.send(protocol.Pong(id=msg.id, ts=msg.ts).encode())
        elif isinstance(msg, protocol.Pong):
            self.rtt = max(0.0, time.time() - msg.ts)
        elif isinstance(msg, protocol.ChatAck):
            self.acked(msg.seq)
        elif isinstance(msg, protocol.MeshReport):
            self.mesh._on_report(self.peer_id, msg)
        elif isinstance(msg, protocol.RelayOpen):
            via = route or None
            pending = self._relay_pending
            if pending is not None:
                if pending.via == via:
                    self._relay_confirmed()
            elif not self._relayed_through(via):
                self.signals.put_nowait({"type": "_accept_relay", "via": via})
        elif isinstance(msg, protocol.RelayFrame):
            if route is not None or self.transport != "direct":
                log.warning("relay-frame from %s not on a direct link: dropped", self.peer_id)
            elif msg.to is not None:
                self.mesh._forward(self, msg.to, msg.data)
            elif msg.sender is not None:
                self.mesh._relayed_in(self.peer_id, msg.sender, msg.data)
        else:
            if isinstance(msg, protocol.ChatMessage):
                self._ack_later(msg.seq)
            self.mesh.on_event("control", self.peer_id, msg)

    # ------------------------------------------------------------- sending
    def send(self, data: str | bytes, seq: int | None = None) -> None:
        """Send now, or queue (bounded) while the link is opening or re-opening.

        A chat frame comes with its ``seq``: it is kept until the peer confirms
        it, and sent again if the link fails first (see :data:`MAX_UNACKED`)."""
        is_open = self.channel is not None and self.channel.readyState == "open"
        if not is_open and self.state in ("closed", "lost", "limited"):
            reason = f" ({self.limited_reason})" if self.limited_reason else ""
            raise PeerUnavailable(f"link to peer {self.peer_id} is {self.state}{reason}")
        if not is_open and len(self.outbox) >= MAX_OUTBOX:
            raise PeerUnavailable(
                f"peer {self.peer_id} is {self.state} and {MAX_OUTBOX} messages are queued"
            )
        if seq is not None and isinstance(data, str):
            self.unacked.append((seq, data))
        if is_open:
            self._transmit(data)
        else:
            self.outbox.append(data)
        if self._ack_due is not None and self._batch:
            self._send_ack()  # joins the batch this frame is in

    async def wait_writable(self, high_water: int) -> None:
        """Until the channel is open with at most ``high_water`` bytes buffered.

        This is the flow control for bulk data: memory stays bounded by the
        buffer, not by what the caller wants to send.
        """
        while True:
            if self.state in ("closed", "lost", "limited"):
                raise PeerUnavailable(f"link to peer {self.peer_id} is {self.state}")
            channel = self.channel
            if (
                channel is not None
                and channel.readyState == "open"
                and channel.bufferedAmount <= high_water
            ):
                return
            await self._wake.wait()

    def ping(self, now: float) -> None:
        """Called every ``ping_interval``: fail a silent link, else send a ping."""
        if self.state not in OPEN_STATES:
            return
        timeout = self.mesh.settings.pong_timeout
        if self.last_heard is not None and now - self.last_heard > timeout:
            self._attempt_failed(self.generation, f"nothing heard for {timeout:g} s")
            return
        with contextlib.suppress(PeerUnavailable):
            self.send(protocol.Ping(id=uuid.uuid4().hex[:16], ts=time.time()).encode())

    async def refresh_stats(self) -> None:
        """aiortc's view of the round trip: SCTP's smoothed RTT (getStats() of a
        data-channel-only connection has no transport entries in aiortc 1.16)."""
        pc = self.pc
        if pc is None or self.state != "connected":
            self.stats_rtt = None
            return
        stats: list[Any] = []
        with contextlib.suppress(Exception):  # a closing connection may fail; best effort
            stats = list((await pc.getStats()).values())
        for stat in stats:
            rtt = getattr(stat, "roundTripTime", None) or getattr(
                stat, "currentRoundTripTime", None
            )
            if isinstance(rtt, int | float):
                self.stats_rtt = float(rtt)
                return
        srtt = getattr(pc.sctp, "_srtt", None) if pc.sctp is not None else None
        self.stats_rtt = float(srtt) if isinstance(srtt, int | float) else None

    # ------------------------------------------------------------ signals
    async def run(self) -> None:
        """Make the offer if it is ours to make, then apply signals in order."""
        if self.initiator:
            await self._guarded(self._first_offer())
        while True:
            signal = await self.signals.get()
            await self._guarded(self._handle(signal))

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A malformed SDP or candidate must not end the worker: report it.
            log.warning("bad signal from %s: %s", self.peer_id, exc)
            self.mesh.on_event(
                "error", self.peer_id, ProtocolError(f"bad signal from {self.peer_id}: {exc}")
            )
        except P2PError as exc:
            # Signaling is down or the peer is away: the watchdog retries later.
            log.info("link %s: %s", self.peer_id, exc)

    async def _first_offer(self) -> None:
        if not self.mesh.has_capacity(excluding=self):
            self._limit(f"our max_connections ({self.mesh.max_connections})", here=True)
            # tell the peer, or it would wait for our offer forever
            await self.mesh.send_signal(
                self.peer_id, {"type": "refuse", "reason": "max_connections"}
            )
            return
        await self._offer()

    async def _handle(self, signal: dict[str, Any]) -> None:
        kind = signal.get("type")
        if kind == "_reconnect":
            if self.state == "reconnecting":
                await self._offer()
        elif kind == "_relay":
            await self._start_relay()
        elif kind == "_accept_relay":
            await self._accept_relay(signal.get("via"))
        elif kind == "refuse":
            await self._close_pc()
            self._limit("the peer's max_connections", here=False)
        elif kind == "invite":
            if not self.initiator:
                return
            if self.state in OPEN_STATES:
                # the peer lost the link and we did not notice: start again now
                self._attempt_failed(self.generation, "peer asked to reconnect")
            elif self.state in ("lost", "limited"):
                self.restart()
        else:
            await self._apply(signal)

    def _limit(self, reason: str, *, here: bool) -> None:
        self.limited_reason = reason
        self.limited_here = here
        self._set_state("limited")

    async def _offer(self) -> None:
        pc = await self._new_pc()
        gen = self.generation
        self._attach_channel(
            pc.createDataChannel(
                protocol.CHANNEL_LABEL, ordered=True, protocol=protocol.CHANNEL_PROTOCOL
            ),
            gen,
        )
        if self.state in ("new", "limited"):
            self.limited_reason = None
            self._set_state("connecting")
        await pc.setLocalDescription(await pc.createOffer())
        await self._send_description(pc)

    async def _send_description(self, pc: RTCPeerConnection) -> None:
        desc = pc.localDescription
        await self.mesh.send_signal(self.peer_id, {"type": desc.type, "sdp": desc.sdp})

    async def _apply(self, signal: dict[str, Any]) -> None:
        kind = signal.get("type")
        if kind == "offer" and not self.initiator:
            if self.state in ("new", "limited", "lost") and not self.mesh.has_capacity(
                excluding=self
            ):
                self._limit(f"our max_connections ({self.mesh.max_connections})", here=True)
                await self.mesh.send_signal(
                    self.peer_id, {"type": "refuse", "reason": "max_connections"}
                )
                return
            # A new offer on a used connection means the initiator is reconnecting.
            pc = self.pc
            if pc is None or pc.remoteDescription is not None:
                pc = await self._new_pc()
            if self.state in ("new", "limited"):
                self.limited_reason = None
                self._set_state("connecting")
            elif self.state in ("lost", "relayed"):
                self.attempts = 0
                self._set_state("reconnecting")
            await pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self._send_description(pc)
        elif kind == "answer" and self.initiator and self.pc is not None:
            await self.pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], "answer"))
        elif kind == "candidate" and self.pc is not None:
            await self._add_candidate(self.pc, signal.get("candidate"))
        else:
            raise ValueError(f"unexpected {kind!r} for a link where initiator={self.initiator}")

    @staticmethod
    async def _add_candidate(pc: RTCPeerConnection, cand: Any) -> None:
        """Browsers trickle candidates; aiortc sends all of them inside the SDP."""
        if cand is None or cand == "" or (isinstance(cand, dict) and not cand.get("candidate")):
            await pc.addIceCandidate(None)
            return
        if isinstance(cand, str):
            cand = {"candidate": cand, "sdpMLineIndex": 0}
        line = str(cand["candidate"])
        candidate = candidate_from_sdp(
            line.split(":", 1)[1] if line.startswith("candidate:") else line
        )
        candidate.sdpMid = cand.get("sdpMid")
        candidate.sdpMLineIndex = cand.get("sdpMLineIndex")
        await pc.addIceCandidate(candidate)

    # ------------------------------------------------------------- reports
    def status(self) -> LinkStatus:
        return LinkStatus(
            peer_id=self.peer_id,
            name=self.name,
            state=self.state,
            initiator=self.initiator,
            ice_state=self.pc.iceConnectionState if self.pc is not None else "closed",
            connected_at=self.connected_at,
            queued=len(self.outbox),
            buffered=self.channel.bufferedAmount if self.channel is not None else 0,
            reconnects=self.reconnects,
            rtt=self.rtt,
            transport=self.transport,
            limited_reason=self.limited_reason,
            relay_via=self.relay_via,
        )

    def quality(self) -> ConnectionQuality:
        now = time.monotonic()
        return ConnectionQuality(
            peer_id=self.peer_id,
            state=self.state,
            transport=self.transport,
            rtt=self.rtt,
            stats_rtt=self.stats_rtt,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            buffered=self.channel.bufferedAmount if self.channel is not None else 0,
            queued=len(self.outbox),
            connected_for=(
                time.time() - self.connected_at
                if self.connected_at is not None and self.state in OPEN_STATES
                else None
            ),
            reconnects=self.reconnects,
            last_heard=now - self.last_heard if self.last_heard is not None else None,
        )

    async def cut(self) -> None:
        """Test hook: close this link's transport as a network failure would.

        The link goes through ``reconnecting`` and comes back on its own."""
        if self.pc is not None:
            await self.pc.close()
        elif isinstance(self.channel, RelayChannel):
            self._attempt_failed(self.generation, "relay cut")

    async def close(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.channel is not None and self.channel.readyState == "open":
            self._send_batch()  # what was sent before leaving still leaves
        self._set_state("closed")
        await self._close_pc()


class Mesh:
    """Every link of one room membership."""

    def __init__(
        self,
        local_id: str,
        *,
        send_signal: SendSignal,
        on_event: OnEvent,
        ice_servers: list[RTCIceServer],
        policy: ReconnectPolicy | None = None,
        settings: MeshSettings | None = None,
        send_relay: SendRelay | None = None,
        max_connections: int | None = None,
        relay_peers: RelayPeers | None = None,
        offers_relay: OffersRelay | None = None,
    ) -> None:
        self.local_id = local_id
        self.send_signal = send_signal
        self.send_relay = send_relay
        self.relay_peers = relay_peers
        self.offers_relay = offers_relay
        self.on_event = on_event
        self.ice_servers = ice_servers
        settings = settings or MeshSettings()
        if policy is not None:
            settings = MeshSettings(**{**settings.__dict__, "reconnect": policy})
        self.settings = settings
        self.max_connections = max_connections
        self.links: dict[str, PeerLink] = {}
        self.reports: dict[str, dict[str, str]] = {}
        """The latest ``mesh-report`` of each peer: its links and their states."""
        self._report_wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[Any]] = {}
        self._tasks = TaskSet(f"mesh-{local_id}")
        self.closing = False
        self._tasks.spawn(self._ping_loop(), "ping")
        if settings.quality_interval is not None:
            self._tasks.spawn(self._quality_loop(settings.quality_interval), "quality")

    @property
    def policy(self) -> ReconnectPolicy:
        return self.settings.reconnect

    def spawn(self, coro: Any, name: str) -> None:
        if self.closing:
            coro.close()
            return
        self._tasks.spawn(coro, name)

    def add_peer(self, peer_id: str, name: str) -> PeerLink:
        link = self.links.get(peer_id)
        if link is not None:
            return link
        link = PeerLink(self, peer_id, name)
        self.links[peer_id] = link
        self._workers[peer_id] = self._tasks.spawn(link.run(), f"link-{peer_id}")
        return link

    def handle_signal(self, from_id: str, data: dict[str, Any]) -> None:
        """Queue a signal for its link; an offer may arrive before the presence event."""
        link = self.links.get(from_id) or self.add_peer(from_id, from_id)
        link.signals.put_nowait(data)

    def handle_relay(self, from_id: str, data: str | bytes) -> None:
        """A data-channel frame that came through the signaling relay."""
        link = self.links.get(from_id)
        if link is None or link.state == "closed":
            log.info("relayed frame from unknown peer %s dropped", from_id)
            return
        link._on_message(data, "")

    # ------------------------------------------------------- peer relaying
    def relay_peer_for(self, peer_id: str) -> str | None:
        """The peer to relay our link to ``peer_id`` through: the lowest id among
        those advertising ``relay`` with a direct link both to us and (by its
        latest mesh report) to ``peer_id``; ``None`` if there is none."""
        if not self.settings.relay or self.relay_peers is None:
            return None
        candidates = []
        for pid in self.relay_peers():
            link = self.links.get(pid)
            if (
                pid in (peer_id, self.local_id)
                or link is None
                or link.state != "connected"
                or link.transport != "direct"
                or self.reports.get(pid, {}).get(peer_id) != "connected"
            ):
                continue
            candidates.append(pid)
        return min(candidates) if candidates else None

    def _forward(self, source: PeerLink, to: str, data: str | bytes) -> None:
        """We relay: pass a frame from ``source`` on to ``to``, at once (so in
        arrival order), if we offer the service and have direct links to both."""
        target = self.links.get(to)
        if (
            self.offers_relay is None
            or not self.offers_relay()
            or target is None
            or target is source
            or target.state != "connected"
            or target.transport != "direct"
        ):
            log.info("relay-frame from %s to %s not forwarded", source.peer_id, to)
            return
        try:
            target._transmit(protocol.RelayFrame(data=data, sender=source.peer_id).encode())
        except Exception as exc:  # the target's channel is closing: the frame is lost
            log.info("relay-frame from %s to %s: %s", source.peer_id, to, exc)

    def _relayed_in(self, via: str, sender: str, data: str | bytes) -> None:
        """A frame that ``via`` relayed for ``sender``: taken only from a peer that
        advertises ``relay``, and only for a link relayed through it (or about to
        be: one with no channel at all), so no other peer can speak for ``sender``."""
        link = self.links.get(sender)
        pending = link._relay_pending if link is not None else None
        if (
            link is None
            or link.state == "closed"
            or sender in (via, self.local_id)
            or self.relay_peers is None
            or via not in self.relay_peers()
            or not (
                link._relayed_through(via)
                or (pending is not None and pending.via == via)
                or link.channel is None
            )
        ):
            log.info("frame relayed by %s for peer %s dropped", via, sender)
            return
        link._on_message(data, via)

    def _relay_route_down(self, via: str) -> None:
        """Our direct link to ``via`` is no longer up: links it relayed fail over."""
        for link in list(self.links.values()):
            if link.peer_id != via:
                link._relay_lost(via)

    async def remove_peer(self, peer_id: str) -> None:
        link = self.links.pop(peer_id, None)
        self.reports.pop(peer_id, None)
        worker = self._workers.pop(peer_id, None)
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        if link is not None:
            await link.close()

    def link(self, peer_id: str) -> PeerLink:
        link = self.links.get(peer_id)
        if link is None:
            raise PeerUnavailable(f"no peer {peer_id!r} in this room")
        return link

    def send(self, peer_id: str, data: str | bytes, seq: int | None = None) -> None:
        self.link(peer_id).send(data, seq)

    def connected_peers(self) -> list[str]:
        """Peers messages reach now: direct links and relayed ones."""
        return [pid for pid, link in self.links.items() if link.state in OPEN_STATES]

    def reachable(self) -> list[str]:
        """Peers a broadcast goes to: open, opening or re-opening links (queued)."""
        return [
            pid
            for pid, link in self.links.items()
            if link.state not in ("lost", "closed", "limited")
        ]

    # ---------------------------------------------------------- capacity
    def active_count(self, excluding: PeerLink | None = None) -> int:
        return sum(
            1
            for link in self.links.values()
            if link is not excluding and link.state in ACTIVE_STATES
        )

    def has_capacity(self, excluding: PeerLink | None = None) -> bool:
        limit = self.max_connections
        return limit is None or self.active_count(excluding) < limit

    def _capacity_changed(self) -> None:
        """A slot may be free: retry limited links (we offer, or invite the offerer)."""
        if self.closing:
            return
        for link in list(self.links.values()):
            if link.state != "limited" or not link.limited_here or not self.has_capacity():
                continue
            if link.initiator:
                link.restart()
            else:
                self.spawn(link._invite(), f"invite-{link.peer_id}")

    def set_max_connections(self, limit: int | None) -> None:
        """Lowering it keeps existing links; raising it retries limited ones."""
        self.max_connections = limit
        self._capacity_changed()

    # ------------------------------------------------------------ reports
    def report(self) -> dict[str, str]:
        return {pid: link.state for pid, link in self.links.items()}

    def _on_report(self, peer_id: str, msg: protocol.MeshReport) -> None:
        self.reports[peer_id] = msg.links
        self._report_wake.set()
        self._report_wake = asyncio.Event()
        if msg.request:
            with contextlib.suppress(PeerUnavailable):
                self.send(peer_id, protocol.MeshReport(self.report()).encode())

    def _report_changed(self) -> None:
        """Tell open peers our links changed (what ``validate_mesh`` builds on)."""
        report = protocol.MeshReport(self.report()).encode()
        for pid in self.connected_peers():
            with contextlib.suppress(PeerUnavailable):
                self.send(pid, report)

    async def collect_reports(self, timeout: float) -> None:
        """Ask every open peer for its report; wait for all answers (or ``timeout``)."""
        asked = self.connected_peers()
        before = {pid: self.reports.get(pid) for pid in asked}
        request = protocol.MeshReport(self.report(), request=True).encode()
        fresh: set[str] = set()
        for pid in asked:
            with contextlib.suppress(PeerUnavailable):
                self.send(pid, request)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(fresh) < len(asked):
                    wake = self._report_wake
                    await wake.wait()
                    fresh |= {pid for pid in asked if self.reports.get(pid) is not before[pid]}

    # --------------------------------------------------- liveness, quality
    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            now = time.monotonic()
            for link in list(self.links.values()):
                link.ping(now)

    async def _quality_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for link in list(self.links.values()):
                await link.refresh_stats()
                self.on_event("quality", link.peer_id, link.quality())

    async def close(self) -> None:
        self.closing = True
        await self._tasks.aclose()
        self._workers.clear()
        links = list(self.links.values())
        self.links.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


__all__ = [
    "ConnectionQuality",
    "LinkStatus",
    "Mesh",
    "MeshSettings",
    "PeerLink",
    "ReconnectPolicy",
    "RelayChannel",
    "SignalingError",
]
