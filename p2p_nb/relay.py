"""A link's stand-in data channel when two peers cannot connect directly:
frames go through the signaling server's relay, or through a third peer that
offers the ``relay`` service."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from . import protocol
from .errors import P2PError, PeerUnavailable

if TYPE_CHECKING:
    from .peerlink import PeerLink

log = logging.getLogger(__name__)

PEER_RELAY_HIGH_WATER = 1024 * 1024
"""A link relayed through a peer hands frames to that peer's data channel while
it buffers at most this much."""


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
        self.bufferedAmount = 0
        return left
