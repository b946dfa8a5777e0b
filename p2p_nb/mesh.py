"""The full mesh: one RTCPeerConnection and one data channel per remote peer.

Glare-free by rule: of two peers, the one with the smaller peer id makes the
offer, so both never offer at once. Signals for a peer are handled one at a
time, in arrival order, by that link's own worker task.
"""

from __future__ import annotations

import asyncio
import logging
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

LINK_STATES = ("new", "connecting", "connected", "closed", "failed")
MAX_OUTBOX = 1000
"""Messages held per peer while its channel is still opening."""


@dataclass
class LinkStatus:
    peer_id: str
    name: str
    state: str
    initiator: bool
    ice_state: str
    connected_at: float | None
    queued: int


class PeerLink:
    """The link to one remote peer."""

    def __init__(self, mesh: Mesh, peer_id: str, name: str) -> None:
        self.mesh = mesh
        self.peer_id = peer_id
        self.name = name
        self.initiator = mesh.local_id < peer_id
        self.state = "new"
        self.connected_at: float | None = None
        self.channel: RTCDataChannel | None = None
        self.outbox: deque[str | bytes] = deque()
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(mesh.ice_servers)))
        self.pc.on("connectionstatechange", self._on_pc_state)
        self.pc.on("datachannel", self._attach_channel)

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("%s link %s: %s -> %s", self.mesh.local_id, self.peer_id, self.state, state)
        old, self.state = self.state, state
        self.mesh.on_event("peer_state", self.peer_id, {"old": old, "new": state})
        if state == "connected":
            self.connected_at = time.time()
            self.mesh.on_event("peer_connected", self.peer_id, {"name": self.name})

    def _on_pc_state(self) -> None:
        pc_state = self.pc.connectionState
        if pc_state == "failed":
            self._set_state("failed")
        elif pc_state == "closed" and self.state != "failed":
            self._set_state("closed")
        elif pc_state == "connecting" and self.state == "new":
            self._set_state("connecting")

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != protocol.CHANNEL_LABEL:
            log.warning("peer %s opened unexpected channel %r", self.peer_id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on(
            "close", lambda: self._set_state("closed") if self.state == "connected" else None
        )
        if channel.readyState == "open":
            self._on_open()
        else:
            channel.on("open", self._on_open)

    def _on_open(self) -> None:
        assert self.channel is not None
        while self.outbox:
            self.channel.send(self.outbox.popleft())
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
            return
        self.mesh.on_event("control", self.peer_id, msg)

    def send(self, data: str | bytes) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(data)
        elif self.state in ("closed", "failed"):
            raise PeerUnavailable(f"link to peer {self.peer_id} is {self.state}")
        elif len(self.outbox) >= MAX_OUTBOX:
            raise PeerUnavailable(
                f"peer {self.peer_id} is still connecting and {MAX_OUTBOX} messages are queued"
            )
        else:
            self.outbox.append(data)

    async def run(self) -> None:
        """Make the offer if it is ours to make, then apply signals in order."""
        if self.initiator:
            self._attach_channel(
                self.pc.createDataChannel(
                    protocol.CHANNEL_LABEL, ordered=True, protocol=protocol.CHANNEL_PROTOCOL
                )
            )
            self._set_state("connecting")
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self._send_description()
        while True:
            signal = await self.signals.get()
            try:
                await self._apply(signal)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # A malformed SDP or candidate must not end the worker: report it.
                log.warning("bad %s from %s: %s", signal.get("type"), self.peer_id, exc)
                self.mesh.on_event(
                    "error", self.peer_id, ProtocolError(f"bad signal from {self.peer_id}: {exc}")
                )

    async def _send_description(self) -> None:
        desc = self.pc.localDescription
        await self.mesh.send_signal(self.peer_id, {"type": desc.type, "sdp": desc.sdp})

    async def _apply(self, signal: dict[str, Any]) -> None:
        kind = signal.get("type")
        if kind == "offer" and not self.initiator:
            self._set_state("connecting")
            await self.pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self._send_description()
        elif kind == "answer" and self.initiator:
            await self.pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], "answer"))
        elif kind == "candidate":
            await self._add_candidate(signal.get("candidate"))
        else:
            raise ValueError(f"unexpected {kind!r} for a link where initiator={self.initiator}")

    async def _add_candidate(self, cand: Any) -> None:
        """Browsers trickle candidates; aiortc sends all of them inside the SDP."""
        if cand is None or cand == "" or (isinstance(cand, dict) and not cand.get("candidate")):
            await self.pc.addIceCandidate(None)
            return
        if isinstance(cand, str):
            cand = {"candidate": cand, "sdpMLineIndex": 0}
        line = str(cand["candidate"])
        candidate = candidate_from_sdp(
            line.split(":", 1)[1] if line.startswith("candidate:") else line
        )
        candidate.sdpMid = cand.get("sdpMid")
        candidate.sdpMLineIndex = cand.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    def status(self) -> LinkStatus:
        return LinkStatus(
            peer_id=self.peer_id,
            name=self.name,
            state=self.state,
            initiator=self.initiator,
            ice_state=self.pc.iceConnectionState,
            connected_at=self.connected_at,
            queued=len(self.outbox),
        )

    async def close(self) -> None:
        await self.pc.close()
        self._set_state("closed")


class Mesh:
    """Every link of one room membership."""

    def __init__(
        self,
        local_id: str,
        *,
        send_signal: SendSignal,
        on_event: OnEvent,
        ice_servers: list[RTCIceServer],
    ) -> None:
        self.local_id = local_id
        self.send_signal = send_signal
        self.on_event = on_event
        self.ice_servers = ice_servers
        self.links: dict[str, PeerLink] = {}
        self._workers: dict[str, asyncio.Task[Any]] = {}
        self._tasks = TaskSet(f"mesh-{local_id}")

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

    def send(self, peer_id: str, data: str | bytes) -> None:
        link = self.links.get(peer_id)
        if link is None:
            raise PeerUnavailable(f"no peer {peer_id!r} in this room")
        link.send(data)

    def connected_peers(self) -> list[str]:
        return [pid for pid, link in self.links.items() if link.state == "connected"]

    async def close(self) -> None:
        await self._tasks.aclose()
        self._workers.clear()
        links = list(self.links.values())
        self.links.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
