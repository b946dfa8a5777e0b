"""What a peer link is: its states, the settings every link follows, and the
status and quality it reports (the types the app and the panel read)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backoff import Backoff

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
    tail_loss_probe: bool = True
    """Send a lost last packet again after two round trips instead of SCTP's
    1 s timer (:class:`~p2p_nb._aiortc.tail_loss_probe.TailLossProbe`); off only
    to measure what it does (``python -m bench --network --compare-sctp``)."""
    loss_tolerant_window: bool = True
    """After a loss, keep SCTP's congestion window at the path's measured
    capacity instead of halving it (Westwood+;
    :class:`~p2p_nb._aiortc.loss_tolerant_window.LossTolerantWindow`): random
    loss (Wi-Fi) no longer caps throughput; off only to measure it."""
    quick_transmit: bool = True
    """Skip SCTP's walk through all data in flight on every transmit when
    nothing waits for retransmission
    (:class:`~p2p_nb._aiortc.quick_transmit.QuickTransmit`): the same packets
    for less CPU; off only to measure it."""
    delayed_sack: bool = True
    """Acknowledge every second packet of data instead of every one, as SCTP's
    RFC allows (:class:`~p2p_nb._aiortc.delayed_sack.DelayedSack`): half the
    acknowledgements to build, send and process; off only to measure it."""


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
    ice_route: str | None = None
    """On an open direct link, how the ICE pair in use goes: ``host`` (a direct
    path), ``srflx`` (through a NAT) or ``relay`` (through a TURN server)."""
    safety_code: str | None = None
    """On a direct link, six digits both users should see alike: different
    codes mean someone (the signaling server) sits in the middle. ``None`` on a
    relayed link (its frames are readable by the relay anyway)."""


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
