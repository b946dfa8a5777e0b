"""The full mesh: one RTCPeerConnection and one data channel per remote peer.

Glare-free by rule: of two peers, the one with the smaller peer id makes the
offer, so both never offer at once; after a link drops it is also the one that
offers again (with backoff), while the other waits for that offer. Signals for
a peer are handled one at a time, in arrival order, by that link's worker task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from .errors import PeerUnavailable, ProtocolError
from .tasks import TaskSet

log = logging.getLogger(__name__)

SendSignal = Callable[[str, dict[str, Any]], Awaitable[None]]
OnEvent = Callable[[str, str, Any], None]
"""Callback (event name, peer id, data) towards the app."""

LINK_STATES = ("new", "connecting", "connected", "reconnecting", "lost", "closed")
MAX_OUTBOX = 1000
"""Messages held per peer while its link is opening or re-opening."""
LOW_WATER = 256 * 1024
"""``bufferedAmountLowThreshold``: senders waiting for room wake below this."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard a dropped link is retried before the peer is reported lost."""

    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    jitter: float = 0.5
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    attempt_timeout: float = 15.0
    """An attempt that has not opened its channel by then counts as failed."""

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        return float(base * random.uniform(1 - self.jitter, 1 + self.jitter))


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
        self.channel: RTCDataChannel | None = None
        self.generation = 0
        self._failed_generation = -1
        self.attempts = 0
        self.reconnects = 0
        self.rtt: float | None = None
        self.outbox: deque[str | bytes] = deque()
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()

    # --------------------------------------------------------------- state
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("%s link %s: %s -> %s", self.mesh.local_id, self.peer_id, self.state, state)
        old, self.state = self.state, state
        self._notify()
        self.mesh.on_event("peer_state", self.peer_id, {"old": old, "new": state})
        if state == "connected":
            self.connected_at = time.time()
            self.mesh.on_event("peer_connected", self.peer_id, {"name": self.name})
        elif state == "reconnecting":
            self.mesh.on_event("peer_reconnecting", self.peer_id, {"attempt": self.attempts})
        elif state in ("lost", "closed"):
            if state == "lost":
                self.mesh.on_event("peer_lost", self.peer_id, {"name": self.name})
            if self.outbox:
                undelivered = list(self.outbox)
                self.outbox.clear()
                self.mesh.on_event("undelivered", self.peer_id, undelivered)

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
        if self.state in ("closed", "lost"):
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
        if self.attempts > self.mesh.policy.max_attempts:
            self._give_up()
            return
        self._set_state("reconnecting")
        if self.initiator:
            delay = self.mesh.policy.delay(self.attempts)

            async def later() -> None:
                await asyncio.sleep(delay)
                self.signals.put_nowait({"type": "_reconnect"})

            self.mesh.spawn(later(), f"reconnect-{self.peer_id}")
        else:

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

    def _give_up(self) -> None:
        self._set_state("lost")
        self.mesh.spawn(self._close_pc(), f"close-{self.peer_id}")

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
        pc, self.pc, self.channel = self.pc, None, None
        if pc is not None:
            self.generation += 1  # callbacks of the old connection are ignored from here
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
        while self.outbox:
            self.channel.send(self.outbox.popleft())
        if self.attempts:
            self.reconnects += 1
        self.attempts = 0
        self._set_state("connected")

    def _on_message(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.mesh.on_event("binary", self.peer_id, data)
            return
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
        else:
            self.mesh.on_event("control", self.peer_id, msg)

    # ------------------------------------------------------------- sending
    def send(self, data: str | bytes) -> None:
        """Send now, or queue (bounded) while the link is opening or re-opening."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(data)
        elif self.state in ("closed", "lost"):
            raise PeerUnavailable(f"link to peer {self.peer_id} is {self.state}")
        elif len(self.outbox) >= MAX_OUTBOX:
            raise PeerUnavailable(
                f"peer {self.peer_id} is {self.state} and {MAX_OUTBOX} messages are queued"
            )
        else:
            self.outbox.append(data)

    async def wait_writable(self, high_water: int) -> None:
        """Until the channel is open with at most ``high_water`` bytes buffered.

        This is the flow control for bulk data: memory stays bounded by the
        buffer, not by what the caller wants to send.
        """
        while True:
            if self.state in ("closed", "lost"):
                raise PeerUnavailable(f"link to peer {self.peer_id} is {self.state}")
            channel = self.channel
            if (
                channel is not None
                and channel.readyState == "open"
                and channel.bufferedAmount <= high_water
            ):
                return
            await self._wake.wait()

    # ------------------------------------------------------------ signals
    async def run(self) -> None:
        """Make the offer if it is ours to make, then apply signals in order."""
        if self.initiator:
            await self._offer()
        while True:
            signal = await self.signals.get()
            try:
                if signal.get("type") == "_reconnect":
                    if self.state == "reconnecting":
                        await self._offer()
                    continue
                await self._apply(signal)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # A malformed SDP or candidate must not end the worker: report it.
                log.warning("bad %s from %s: %s", signal.get("type"), self.peer_id, exc)
                self.mesh.on_event(
                    "error", self.peer_id, ProtocolError(f"bad signal from {self.peer_id}: {exc}")
                )

    async def _offer(self) -> None:
        pc = await self._new_pc()
        gen = self.generation
        self._attach_channel(
            pc.createDataChannel(
                protocol.CHANNEL_LABEL, ordered=True, protocol=protocol.CHANNEL_PROTOCOL
            ),
            gen,
        )
        if self.state == "new":
            self._set_state("connecting")
        await pc.setLocalDescription(await pc.createOffer())
        await self._send_description(pc)

    async def _send_description(self, pc: RTCPeerConnection) -> None:
        desc = pc.localDescription
        await self.mesh.send_signal(self.peer_id, {"type": desc.type, "sdp": desc.sdp})

    async def _apply(self, signal: dict[str, Any]) -> None:
        kind = signal.get("type")
        if kind == "offer" and not self.initiator:
            # A new offer on a used connection means the initiator is reconnecting.
            pc = self.pc
            if pc is None or pc.remoteDescription is not None:
                pc = await self._new_pc()
            if self.state == "new":
                self._set_state("connecting")
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
        )

    async def close(self) -> None:
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
    ) -> None:
        self.local_id = local_id
        self.send_signal = send_signal
        self.on_event = on_event
        self.ice_servers = ice_servers
        self.policy = policy or ReconnectPolicy()
        self.links: dict[str, PeerLink] = {}
        self._workers: dict[str, asyncio.Task[Any]] = {}
        self._tasks = TaskSet(f"mesh-{local_id}")
        self.closing = False

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

    async def remove_peer(self, peer_id: str) -> None:
        link = self.links.pop(peer_id, None)
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

    def send(self, peer_id: str, data: str | bytes) -> None:
        self.link(peer_id).send(data)

    def connected_peers(self) -> list[str]:
        return [pid for pid, link in self.links.items() if link.state == "connected"]

    async def close(self) -> None:
        self.closing = True
        await self._tasks.aclose()
        self._workers.clear()
        links = list(self.links.values())
        self.links.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
