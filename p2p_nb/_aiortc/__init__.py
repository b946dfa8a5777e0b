"""Every reach into aiortc's and aioice's internals: p2p-nb's quarantine.

Why this package exists: aiortc and aioice do not expose what p2p-nb needs
(the size of the UDP sockets' buffers, the route ICE nominated, one DTLS
certificate per app, a close that leaves no socket behind, the SCTP round
trip) nor let anyone tune their SCTP, so p2p-nb reaches into their private
attributes. Every such reach lives here, one module per patch, so that a new
aiortc is checked in one place (``tests/test_tail_loss_probe.py``,
``tests/test_safety_code.py`` and ``tests/test_ice_sockets.py`` fail loudly,
and ``tests/test_quality.py`` fails if a reach appears anywhere else in
``p2p_nb``):

- :mod:`.sockets`: socket buffers, the route in use, closes that leave no
  socket open (these give up quietly if the internals move);
- :mod:`.certificate`: one DTLS certificate per app (fails loudly: the safety
  code's stability depends on it) and the fingerprint an SDP announces;
- :mod:`.sctp_hook`: what every SCTP hook shares (install once, check the
  internals first, one warning per process if they moved);
- :mod:`.tail_loss_probe`, :mod:`.loss_tolerant_window`,
  :mod:`.quick_transmit`, :mod:`.delayed_sack`: the four SCTP hooks, which
  :func:`install_sctp_hooks` installs as :class:`~p2p_nb.links.MeshSettings`
  says.

The rest of p2p_nb imports only what this module exports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .certificate import StableCertificate, sdp_fingerprint
from .delayed_sack import DelayedSack
from .loss_tolerant_window import LossTolerantWindow
from .quick_transmit import QuickTransmit
from .sockets import (
    close_peer_connection,
    enlarge_socket_buffers,
    route_type,
    set_local_description,
)
from .tail_loss_probe import TailLossProbe

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

__all__ = [
    "SctpSettings",
    "StableCertificate",
    "close_peer_connection",
    "enlarge_socket_buffers",
    "install_sctp_hooks",
    "route_type",
    "sdp_fingerprint",
    "set_local_description",
    "srtt",
]


class SctpSettings(Protocol):
    """Which SCTP hooks to install (:class:`~p2p_nb.links.MeshSettings` is one)."""

    @property
    def tail_loss_probe(self) -> bool: ...
    @property
    def loss_tolerant_window(self) -> bool: ...
    @property
    def quick_transmit(self) -> bool: ...
    @property
    def delayed_sack(self) -> bool: ...


def install_sctp_hooks(pc: RTCPeerConnection, settings: SctpSettings) -> None:
    """Install on ``pc``'s SCTP association the hooks ``settings`` switch on.

    Call it once the data channel is open (the association exists then);
    calling it again installs nothing twice. Each hook that cannot be
    installed (aiortc's internals moved) stays off with one warning per
    process. The order is fixed: the hooks that wrap the same method (the T3
    expiry, the SACK handler) wrap it in this order."""
    if settings.tail_loss_probe:
        TailLossProbe.install(pc)
    if settings.loss_tolerant_window:
        LossTolerantWindow.install(pc)
    if settings.quick_transmit:
        QuickTransmit.install(pc)
    if settings.delayed_sack:
        DelayedSack.install(pc)


def srtt(pc: RTCPeerConnection) -> float | None:
    """SCTP's smoothed round trip on ``pc`` (seconds); ``None`` before the
    first measurement, without an association, or if aiortc's internals moved."""
    sctp = pc.sctp
    value = getattr(sctp, "_srtt", None) if sctp is not None else None
    return float(value) if isinstance(value, int | float) else None
