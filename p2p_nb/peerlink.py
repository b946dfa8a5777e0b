"""The link to one remote peer: its RTCPeerConnection (or relay), its states,
reconnecting with backoff, and what arrives on it.

Glare-free by rule: of two peers, the one with the smaller peer id makes the
offer, so both never offer at once; after a link drops it is also the one that
offers again (with backoff), while the other waits for that offer (and asks for
it with an ``invite`` signal). Signals for a peer are handled one at a time, in
arrival order, by the link's worker task. What leaves on the link is
:class:`~p2p_nb.outgoing.Outgoing`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from . import protocol
from ._aiortc import (
    close_peer_connection,
    enlarge_socket_buffers,
    install_sctp_hooks,
    route_type,
    sdp_fingerprint,
    set_local_description,
    srtt,
)
from .errors import P2PError, PeerUnavailable, ProtocolError, RoomSecretError, SafetyCodeError
from .links import ACTIVE_STATES, OPEN_STATES, ConnectionQuality, LinkStatus
from .outgoing import Outgoing, Owed
from .relay import RelayChannel
from .relaykey import KeyPair, RelaySeal, valid_session_id
from .safety import SafetyState

if TYPE_CHECKING:
    from .mesh import Mesh

log = logging.getLogger(__name__)

AUTHENTICATED_SIGNALS = frozenset({"offer", "answer", "relay", "relay-accept"})
"""Signals that carry ``auth`` in a room with a secret (what a man in the middle
would have to alter)."""
LOW_WATER = 256 * 1024
"""``bufferedAmountLowThreshold``: senders waiting for room wake below this."""


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
        self.bytes_received = 0
        self.messages_received = 0
        self.last_heard: float | None = None
        self.out = Outgoing(self)
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.safety = SafetyState()
        self._attempt_id: str | None = None
        """Tag of our latest offer: an answer to any other one is stale."""
        self.remote_fingerprint: str | None = None
        """The certificate fingerprint of the peer's last direct connection:
        who it is, across reconnects and a new peer id (see :class:`Owed`)."""

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
    def _set_state(self, state: str, reason: str | None = None) -> None:
        if state == self.state:
            return
        log.debug("%s link %s: %s -> %s", self.mesh.local_id, self.peer_id, self.state, state)
        old, self.state = self.state, state
        self._notify()
        change = {"old": old, "new": state}
        if reason is not None:
            change["reason"] = reason
        self.mesh.on_event("peer_state", self.peer_id, change)
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
            never_sent, unconfirmed = self.out.take_undelivered()
            if never_sent or unconfirmed:
                self.mesh.on_event(
                    "undelivered",
                    self.peer_id,
                    {"name": self.name, "frames": never_sent, "unconfirmed": unconfirmed},
                )
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
        channel, self.channel = self.channel, None
        pending, self._relay_pending = self._relay_pending, None
        held: list[str | bytes] = []
        for relay in (channel, pending):
            if isinstance(relay, RelayChannel):
                held[:0] = relay.close()
        self.out.on_drop(held)

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
        self.mesh.certificate.apply(pc)
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
            await close_peer_connection(pc)

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
            remote = self.pc.remoteDescription
            fingerprint = sdp_fingerprint(remote.sdp) if remote is not None else None
            if fingerprint is not None:
                self.remote_fingerprint = fingerprint
                owed = self.mesh.claim_owed(self.peer_id, fingerprint)
                if owed is not None:
                    self.out.resend(owed)
            enlarge_socket_buffers(self.pc)
            install_sctp_hooks(self.pc, self.mesh.settings)
        if self.initiator and self.transport == "direct":
            nonce, replaced = self.safety.reveal()
            if nonce is not None:
                # straight onto this channel: never queued for a later one, whose
                # exchange has another commitment
                with contextlib.suppress(Exception):
                    self.channel.send(protocol.SafetyReveal(nonce).encode())
            self._code_settled(replaced)
        self.out.on_open()
        if self.attempts:
            self.reconnects += 1
        self.attempts = 0
        self._set_state("connected" if self.transport == "direct" else "relayed")

    def _code_settled(self, replaced: Any) -> None:
        """An attempt's safety code is known: say so (``safety_code``), and warn
        (``safety_code_changed``) if it replaced the code of other certificates."""
        code = self.safety.code
        if code is None:
            return
        self.mesh.on_event("safety_code", self.peer_id, {"name": self.name, "code": code})
        if replaced is not None:
            log.warning(
                "safety code of %s changed from %s to %s: other certificates",
                self.peer_id,
                replaced.code,
                code,
            )
            self.mesh.on_event(
                "safety_code_changed",
                self.peer_id,
                {"name": self.name, "old": replaced.code, "new": code},
            )

    # ----------------------------------------------------------------- relay
    async def _start_relay(self) -> None:
        """Offerer: close the direct attempt and ask the peer, in signaling, to
        relay with us through a peer offering the ``relay`` service if there is
        one, else through the signaling server (else it is a direct attempt
        again). Frames wait until the peer's ``relay-accept`` seals the session."""
        if self.state != "reconnecting":
            return
        via = self.mesh.relay_peer_for(self.peer_id)
        if via is None and self.mesh.send_relay is None:
            await self._offer()
            return
        await self._close_pc()
        self.generation += 1
        relay = RelayChannel(self, via)
        assert relay.keys is not None
        self._relay_pending = relay
        log.info(
            "link %s -> %s: trying the relay through %s",
            self.mesh.local_id,
            self.peer_id,
            f"peer {via}" if via is not None else "the signaling server",
        )
        self._watch(self.generation)
        await self.mesh.send_authenticated(
            self.peer_id,
            {
                "type": "relay",
                "via": via or "",
                "session": relay.session,
                "key": relay.keys.public_b64,
            },
        )

    def _relayed_through(self, via: str | None) -> bool:
        return isinstance(self.channel, RelayChannel) and self.channel.via == via

    async def _accept_relay(self, signal: dict[str, Any]) -> None:
        """Answerer: the offerer asks to relay (through ``via``, or signaling):
        agree on the session's keys, answer ``relay-accept`` and switch."""
        via_field, session = signal.get("via", ""), signal.get("session")
        if self.initiator:
            raise ProtocolError(f"peer {self.peer_id} asked us to relay, but we are the offerer")
        if not isinstance(via_field, str) or not valid_session_id(session):
            raise ProtocolError(f"malformed relay signal from {self.peer_id}")
        assert isinstance(session, str)
        via = via_field or None
        if self.state == "closed":
            return
        if self.state == "limited" and not self.mesh.has_capacity(excluding=self):
            return
        if via is None:
            if self.mesh.send_relay is None:
                raise ProtocolError(f"peer {self.peer_id} asked for the signaling relay: it is off")
        else:
            relay = self.mesh.links.get(via)
            if (
                via in (self.peer_id, self.mesh.local_id)
                or relay is None
                or relay.state != "connected"
                or relay.transport != "direct"
            ):
                raise ProtocolError(
                    f"peer {self.peer_id} asked to relay through {via}: no direct link to it"
                )
        keys = KeyPair()
        seal = RelaySeal.agree(
            keys,
            signal.get("key"),
            session=session,
            local_id=self.mesh.local_id,
            peer_id=self.peer_id,
            via=via,
            salt=self.mesh.relay_salt,
        )
        await self._close_pc()
        self.generation += 1
        channel = RelayChannel(self, via, seal)
        self.channel = channel
        self._watch(self.generation)
        await self.mesh.send_authenticated(
            self.peer_id, {"type": "relay-accept", "session": session, "key": keys.public_b64}
        )
        channel.send(protocol.RelayOpen().encode())
        self._on_open(self.generation)

    def _relay_accepted(self, signal: dict[str, Any]) -> None:
        """Offerer: the peer agreed to our relay session (a stale or unknown
        session is ignored: it belongs to an attempt given up)."""
        pending = self._relay_pending
        if not self.initiator or pending is None or signal.get("session") != pending.session:
            log.info("relay-accept from %s for no pending session: ignored", self.peer_id)
            return
        pending.agree(signal.get("key"))

    def relayed_in(self, via: str | None, data: object) -> None:
        """A sealed frame relayed by ``via`` (``None``: the signaling server):
        opened by the relay session agreed with this peer through that route,
        dropped if there is none."""
        for relay in (self.channel, self._relay_pending):
            if isinstance(relay, RelayChannel) and relay.via == via:
                relay.receive(data)
                return
        log.info(
            "frame from %s relayed by %s without an agreed session: dropped",
            self.peer_id,
            via or "the signaling server",
        )

    def _relay_confirmed(self) -> None:
        """Offerer: the peer's relay-open came through the session."""
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
            self.out.on_pong(msg.id)
        elif isinstance(msg, protocol.ChatAck):
            self.out.acked(msg.seq)
        elif isinstance(msg, protocol.MeshReport):
            self.mesh._on_report(self.peer_id, msg)
        elif isinstance(msg, protocol.RelayOpen):
            # only ever opened from a sealed session (relayed_in), so it is the peer's
            pending = self._relay_pending
            if route is not None and pending is not None and pending.via == (route or None):
                self._relay_confirmed()
        elif isinstance(msg, protocol.SafetyReveal):
            if route is not None or self.initiator:
                log.warning(
                    "safety-reveal from %s not on its direct channel: dropped", self.peer_id
                )
                return
            try:
                self._code_settled(self.safety.on_reveal(msg.nonce))
            except SafetyCodeError as exc:
                log.warning("%s: %s", self.peer_id, exc)
                self.mesh.on_event("error", self.peer_id, exc)
        elif isinstance(msg, protocol.RelayFrame):
            if route is not None or self.transport != "direct":
                log.warning("relay-frame from %s not on a direct link: dropped", self.peer_id)
            elif msg.to is not None:
                self.mesh._forward(self, msg.to, msg.data)
            elif msg.sender is not None:
                self.mesh._relayed_in(self.peer_id, msg.sender, msg.data)
        else:
            seq = protocol.sequence_of(msg)
            if seq is not None:
                self.out.ack_later(seq)
            self.mesh.on_event("control", self.peer_id, msg)

    # ------------------------------------------------------------- sending
    def send(self, data: str | bytes, seq: int | None = None) -> None:
        """Send now, or queue while the link is opening (see :class:`Outgoing`)."""
        self.out.send(data, seq)

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
        self.stats_rtt = srtt(pc)

    # ------------------------------------------------------------ signals
    async def run(self) -> None:
        """Make the offer if it is ours to make, then apply signals in order."""
        if self.initiator:
            await self._guarded(self._first_offer())
        while True:
            signal = await self.signals.get()
            await self._guarded(self._handle(signal))

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Nothing a signal does may end the worker: the link would stay in its
        state for ever. Malformed or out-of-place signals are reported."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except ProtocolError as exc:
            log.warning("bad signal from %s: %s", self.peer_id, exc)
            self.mesh.on_event("error", self.peer_id, exc)
        except P2PError as exc:
            # Signaling is down or the peer is away: the watchdog retries later.
            log.info("link %s: %s", self.peer_id, exc)
        except Exception as exc:
            # A malformed SDP or candidate, or aiortc's InvalidStateError for a
            # description that does not fit the connection's state.
            log.warning("bad signal from %s: %r", self.peer_id, exc)
            self.mesh.on_event(
                "error", self.peer_id, ProtocolError(f"bad signal from {self.peer_id}: {exc!r}")
            )

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
        key = self.mesh.room_key
        if key is not None and kind in AUTHENTICATED_SIGNALS:
            try:
                key.check(self.peer_id, self.mesh.local_id, signal)
            except RoomSecretError as exc:
                self._unauthenticated(exc)
                # tell the peer, or it would wait for an answer until it gives up
                await self.mesh.send_signal(
                    self.peer_id, {"type": "refuse", "reason": "room_secret"}
                )
                return
        if kind == "_reconnect":
            if self.state == "reconnecting":
                await self._offer()
        elif kind == "_relay":
            await self._start_relay()
        elif kind == "relay":
            await self._accept_relay(signal)
        elif kind == "relay-accept":
            self._relay_accepted(signal)
        elif kind == "refuse" and signal.get("reason") == "room_secret":
            await self._close_pc()
            why = (
                f"peer {self.peer_id} refused the room authenticator of our "
                f"{'offer' if self.initiator else 'answer'}: it does not have this room's "
                "secret (or someone in between altered it)"
            )
            self._unauthenticated(RoomSecretError(why))
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

    def _unauthenticated(self, exc: RoomSecretError) -> None:
        """A signal without the room secret's authenticator: never open the link."""
        log.warning("link %s: %s", self.peer_id, exc)
        self.mesh.on_event("error", self.peer_id, exc)
        self.limited_reason = str(exc)
        self._set_state("lost", reason=str(exc))
        self.mesh.spawn(self._close_pc(), f"close-{self.peer_id}")

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
        await set_local_description(pc, await pc.createOffer())
        self._attempt_id = secrets.token_hex(8)
        await self._send_description(
            pc, {"attempt": self._attempt_id, **self.safety.offer_fields()}
        )

    async def _send_description(self, pc: RTCPeerConnection, fields: dict[str, Any]) -> None:
        desc = pc.localDescription
        self.mesh.check_turn(self.peer_id, desc.sdp)  # gathering is over by now
        await self.mesh.send_authenticated(
            self.peer_id, {"type": desc.type, "sdp": desc.sdp, **fields}
        )

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
            # A new offer on a used connection means the initiator is reconnecting:
            # leave the open state (transfers pause and resume, chat is resent).
            pc = self.pc
            if pc is None or pc.remoteDescription is not None:
                pc = await self._new_pc()
            if self.state in ("new", "limited"):
                self.limited_reason = None
                self._set_state("connecting")
            elif self.state == "lost" or self.state in OPEN_STATES:
                self.attempts = 0
                self._set_state("reconnecting")
            sdp = signal["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            await set_local_description(pc, await pc.createAnswer())
            attempt = signal.get("attempt")
            fields: dict[str, Any] = {"attempt": attempt} if isinstance(attempt, str) else {}
            try:
                fields |= self.safety.answer_fields(
                    signal, sdp_fingerprint(pc.localDescription.sdp), sdp_fingerprint(sdp)
                )
            except SafetyCodeError as exc:  # answer anyway: the link just shows no code
                self.mesh.on_event("error", self.peer_id, exc)
            await self._send_description(pc, fields)
        elif kind == "answer" and self.initiator:
            pc = self.pc
            attempt = signal.get("attempt")
            if (
                pc is None
                or pc.signalingState != "have-local-offer"
                or (attempt is not None and attempt != self._attempt_id)
            ):
                log.info("stale answer from %s dropped", self.peer_id)
                return
            sdp = signal["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            try:
                self.safety.on_answer(
                    signal, sdp_fingerprint(pc.localDescription.sdp), sdp_fingerprint(sdp)
                )
            except SafetyCodeError as exc:
                self.mesh.on_event("error", self.peer_id, exc)
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
            queued=len(self.out.outbox),
            buffered=self.channel.bufferedAmount if self.channel is not None else 0,
            reconnects=self.reconnects,
            rtt=self.rtt,
            transport=self.transport,
            limited_reason=self.limited_reason,
            relay_via=self.relay_via,
            ice_route=route_type(self.pc)
            if self.pc is not None and self.state in OPEN_STATES
            else None,
            safety_code=self.safety.code if self.transport == "direct" else None,
        )

    def quality(self) -> ConnectionQuality:
        now = time.monotonic()
        return ConnectionQuality(
            peer_id=self.peer_id,
            state=self.state,
            transport=self.transport,
            rtt=self.rtt,
            stats_rtt=self.stats_rtt,
            bytes_sent=self.out.bytes_sent,
            bytes_received=self.bytes_received,
            messages_sent=self.out.messages_sent,
            messages_received=self.messages_received,
            buffered=self.channel.bufferedAmount if self.channel is not None else 0,
            queued=len(self.out.outbox),
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

    def owed(self) -> Owed | None:
        """The link closes for a rebuild under our new id: what it owes the
        peer, for the link to the same person (None: it never had a direct
        connection, so nothing can tell who it was)."""
        frames = self.out.take_owed()
        if self.remote_fingerprint is None:
            if frames:
                self.mesh.on_event(
                    "undelivered",
                    self.peer_id,
                    {"name": self.name, "frames": [], "unconfirmed": [f for _, f in frames]},
                )
            return None
        return Owed(self.peer_id, self.name, self.remote_fingerprint, frames)

    async def close(self) -> None:
        self.out.close()
        self._set_state("closed")
        await self._close_pc()
