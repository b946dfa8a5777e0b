"""The full mesh: one :class:`~p2p_nb.peerlink.PeerLink` (an RTCPeerConnection
and its data channel) per remote peer, and what concerns all of them: routing
signals and relayed frames to links, capacity (``max_connections``), mesh
reports, and the ping and quality timers.

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
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCIceServer

from . import protocol
from ._aiortc import StableCertificate
from .errors import PeerUnavailable, TurnError
from .links import (
    ACTIVE_STATES,
    OPEN_STATES,
    ConnectionQuality,
    LinkStatus,
    MeshSettings,
    ReconnectPolicy,
)
from .outgoing import MAX_UNACKED, Owed
from .peerlink import PeerLink
from .relay import RelayChannel
from .roomkey import RoomKey
from .tasks import TaskSet
from .turn import uses_turn

log = logging.getLogger(__name__)

OWED_TIMEOUT = 60.0
"""Seconds the messages our previous id's links owed wait for their peer to
come back under a new id (see :class:`~p2p_nb.outgoing.Owed`)."""


def _urls(server: RTCIceServer) -> list[str]:
    return [server.urls] if isinstance(server.urls, str) else list(server.urls)


SendSignal = Callable[[str, dict[str, Any]], Awaitable[None]]
SendRelay = Callable[[str, str | bytes], Awaitable[None]]
"""Hand one data-channel frame to the signaling server's relay for a peer."""
RelayPeers = Callable[[], list[str]]
"""Peer ids that advertise the ``relay`` service."""
OffersRelay = Callable[[], bool]
"""Whether we advertise the ``relay`` service (and so forward others' frames)."""
OnEvent = Callable[[str, str, Any], None]
"""Callback (event name, peer id, data) towards the app."""


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
        certificate: StableCertificate | None = None,
        room_key: RoomKey | None = None,
        owed: list[Owed] | None = None,
    ) -> None:
        self.local_id = local_id
        self.owed: dict[str, Owed] = {o.fingerprint: o for o in owed or []}
        """What the links of our previous id owed their peers, by certificate
        fingerprint, until a link to the same certificate opens (or
        ``settings.owed_timeout`` passes: then it is reported undelivered)."""
        self.room_key = room_key
        """In a room with a secret: signals are authenticated with it, relay keys salted."""
        self.certificate = certificate or StableCertificate()
        """The DTLS certificate of every connection (so reconnects keep their safety code)."""
        self.send_signal = send_signal
        self.send_relay = send_relay
        self.relay_peers = relay_peers
        self.offers_relay = offers_relay
        self.on_event = on_event
        self.ice_servers = ice_servers
        self._turn_checked = False
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
        if self.owed:
            self._tasks.spawn(self._give_up_owed(OWED_TIMEOUT), "owed")

    def claim_owed(self, peer_id: str, fingerprint: str) -> Owed | None:
        """A direct link to ``peer_id`` opened with this certificate: what our
        previous id's link to the same peer owed it (once), or what a link of
        ours to the same certificate under the peer's previous id owes (the
        peer rejoined under a new id, we did not), and the seq it had reached
        (``peer_identified``: its resent messages are dropped up to there)."""
        owed = self.owed.pop(fingerprint, None)
        if owed is None:
            twin = next(
                (
                    link
                    for link in self.links.values()
                    if link.peer_id != peer_id
                    and link.remote_fingerprint == fingerprint
                    and link.state not in OPEN_STATES
                ),
                None,
            )
            if twin is None:
                return None
            owed = Owed(twin.peer_id, twin.name, fingerprint, twin.out.take_owed())
        self.on_event(
            "peer_identified",
            peer_id,
            {"previous": owed.peer_id, "name": owed.name, "last_seq": owed.last_seq},
        )
        return owed

    def owe_absent(self, data: str, seq: int) -> None:
        """A broadcast while peers of our previous id are not back yet: it is
        owed to them too (a link to one that is back but not open yet gets
        it twice; :meth:`Outgoing.resend` keeps one)."""
        for owed in self.owed.values():
            if len(owed.frames) < MAX_UNACKED:  # as a link keeps at most
                owed.frames.append((seq, data))

    def _report_owed(self) -> None:
        owed, self.owed = list(self.owed.values()), {}
        for o in owed:
            if o.frames:
                self.on_event(
                    "undelivered",
                    o.peer_id,
                    {"name": o.name, "frames": [], "unconfirmed": [f for _, f in o.frames]},
                )

    async def _give_up_owed(self, timeout: float) -> None:
        """Peers not back under a new id within ``timeout``: their messages
        are reported undelivered (as a link that is lost reports its own)."""
        await asyncio.sleep(timeout)
        self._report_owed()

    @property
    def relay_salt(self) -> bytes | None:
        return self.room_key.relay_salt if self.room_key is not None else None

    async def send_authenticated(self, peer_id: str, signal: dict[str, Any]) -> None:
        """A signal to a peer; in a room with a secret, with its authenticator."""
        if self.room_key is not None:
            signal = {**signal, "auth": self.room_key.authenticate(self.local_id, peer_id, signal)}
        await self.send_signal(peer_id, signal)

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
        """A frame that came through the signaling server's relay (the server
        stamps ``from`` with the sender's own session: no peer can forge it)."""
        link = self.links.get(from_id)
        if link is None or link.state == "closed":
            log.info("relayed frame from unknown peer %s dropped", from_id)
            return
        link.relayed_in(None, data)

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
            target.out.transmit(protocol.RelayFrame(data=data, sender=source.peer_id).encode())
        except Exception as exc:  # the target's channel is closing: the frame is lost
            log.info("relay-frame from %s to %s: %s", source.peer_id, to, exc)

    def _relayed_in(self, via: str, sender: str, data: str | bytes) -> None:
        """A frame that ``via`` relayed for ``sender``: opened only with the seal of
        a relay session through ``via`` that we and ``sender`` agreed to in
        signaling, so the relaying peer cannot speak for ``sender``."""
        link = self.links.get(sender)
        if link is None or link.state == "closed" or sender in (via, self.local_id):
            log.info("frame relayed by %s for peer %s dropped", via, sender)
            return
        link.relayed_in(via, data)

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

    def check_turn(self, peer_id: str, sdp: str) -> None:
        """After gathering: a TURN server that gave us no relay address is
        reported once (its credentials are wrong or expired, or it is down);
        ICE itself only stays silent."""
        if self._turn_checked:
            return
        turn = [url for s in self.ice_servers for url in _urls(s) if uses_turn(url)]
        if not turn:
            return
        self._turn_checked = True
        if " typ relay" not in sdp:
            error = TurnError(
                f"TURN server {turn[0]} gave no relay address (wrong or expired "
                "credentials, or unreachable): peers that cannot reach each other "
                "directly will fall back to the signaling relay, if any"
            )
            log.warning("%s", error)
            self.on_event("error", peer_id, error)

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

    async def close(self, *, hand_over: bool = False) -> list[Owed]:
        """Close every link. With ``hand_over`` (we rejoin under a new id),
        what each owed its peer is returned for the next mesh instead of
        being reported undelivered."""
        self.closing = True
        await self._tasks.aclose()
        self._workers.clear()
        links = list(self.links.values())
        self.links.clear()
        handed: list[Owed] = []
        if hand_over:  # no await from here to the closes: nothing is sent in between
            handed = [o for o in (link.owed() for link in links) if o is not None]
            handed += self.owed.values()  # still owed from an earlier rebuild
            # broadcasts until the next mesh exists are owed to them all
            self.owed = {o.fingerprint: o for o in handed}
        else:
            self._report_owed()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        return handed


__all__ = [
    "ConnectionQuality",
    "LinkStatus",
    "Mesh",
    "MeshSettings",
    "PeerLink",
    "ReconnectPolicy",
    "RelayChannel",
]
