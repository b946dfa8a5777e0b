"""A link's stand-in data channel when two peers cannot connect directly:
frames go through the signaling server's relay, or through a third peer that
offers the ``relay`` service. Every frame is sealed for the other end
(:mod:`p2p_nb.relaykey`): the relay carries ciphertext it can neither read
nor forge."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from . import protocol
from .errors import P2PError, PeerUnavailable, RelayAuthError
from .relaykey import KeyPair, RelaySeal, new_session_id

if TYPE_CHECKING:
    from .peerlink import PeerLink

log = logging.getLogger(__name__)

PEER_RELAY_HIGH_WATER = 1024 * 1024
"""A link relayed through a peer hands frames to that peer's data channel while
it buffers at most this much."""
EARLY_FRAMES = 256
"""Sealed frames kept for a relay session whose ``relay-accept`` has not come
yet (the answerer's first frames may overtake its signal); more are dropped."""


class RelayChannel:
    """Stands in for the data channel when a link goes through a relay.

    Same surface as the part of ``RTCDataChannel`` the link uses
    (``readyState``, ``bufferedAmount``, ``send``); frames go out one at a time,
    in order. ``via`` is ``None`` for the signaling relay (each frame
    acknowledged by the server before the next), else the id of the peer that
    relays: each frame goes, wrapped in a ``relay-frame`` message, on our
    (ordered) data channel to that peer, which forwards it in arrival order.

    ``session`` names the relay session both ends agreed to in signaling;
    frames wait in the queue until its :class:`RelaySeal` is known (the
    offerer learns it from ``relay-accept``).
    """

    label = protocol.CHANNEL_LABEL

    def __init__(
        self,
        link: PeerLink,
        via: str | None = None,
        seal: RelaySeal | None = None,
    ) -> None:
        self.link = link
        self.via = via
        self.seal = seal
        self.session = seal.session if seal is not None else new_session_id()
        self.keys = KeyPair() if seal is None else None
        """Our half of the key agreement, until the seal is made."""
        self.generation = link.generation
        self.readyState = "open"
        self.bufferedAmount = 0
        self._queue: deque[str | bytes] = deque()
        self._sealed_head: bytes | None = None
        self._early: list[bytes] = []
        self._auth_failures = 0
        self._ready = asyncio.Event()
        link.mesh.spawn(self._pump(), f"relay-{link.peer_id}")

    def agree(self, peer_public: object) -> None:
        """The offerer got ``relay-accept``: make the seal, send what waited,
        open what arrived early. Raises :class:`RelayAuthError` for a bad key."""
        if self.seal is not None or self.keys is None:
            raise RelayAuthError(f"relay session {self.session} is already agreed")
        self.seal = RelaySeal.agree(
            self.keys,
            peer_public,
            session=self.session,
            local_id=self.link.mesh.local_id,
            peer_id=self.link.peer_id,
            via=self.via,
            salt=self.link.mesh.relay_salt,
        )
        self.keys = None
        self._ready.set()
        early, self._early = self._early, []
        for frame in early:
            self.receive(frame)

    def receive(self, frame: object) -> None:
        """A sealed frame that came through this relay: open it and hand it to
        the link; a frame that fails is reported (once per session) and dropped."""
        if self.seal is None:
            if isinstance(frame, bytes) and len(self._early) < EARLY_FRAMES:
                self._early.append(frame)
            return
        try:
            data = self.seal.open(frame)
        except RelayAuthError as exc:
            self._auth_failures += 1
            log.warning("%s", exc)
            if self._auth_failures == 1:
                self.link.mesh.on_event("error", self.link.peer_id, exc)
            return
        self.link._on_message(data, self.via or "")

    def _sealed(self) -> bytes:
        """The queue's first frame, sealed once (a retry sends the same bytes,
        which the receiver drops as a replay if the first try did arrive)."""
        assert self.seal is not None
        if self._sealed_head is None:
            self._sealed_head = self.seal.seal(self._queue[0])
        return self._sealed_head

    def _pop(self) -> None:
        data = self._queue.popleft()
        self._sealed_head = None
        self.bufferedAmount -= len(data)

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
            if not self._queue or self.seal is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            data = self._sealed()
            if self.via is not None:
                if not await self._through_peer(self.via, data):
                    return
                self._pop()
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
            if self._queue and self._sealed_head is data:
                self._pop()
            self.link._notify()

    async def _through_peer(self, via: str, data: bytes) -> bool:
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
            relay.out.transmit(protocol.RelayFrame(data=data, to=self.link.peer_id).encode())
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
        self._sealed_head = None
        self._early.clear()
        self.bufferedAmount = 0
        return left
