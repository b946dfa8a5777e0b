"""What aiortc's ICE and DTLS do not expose: the size of its UDP sockets'
buffers, which kind of candidate a connection ended up using (both reach into
aiortc/aioice internals, and give up quietly if those move), and one DTLS
certificate for every connection of an app (this one fails loudly: the safety
code's stability depends on it, and ``tests/test_safety_code.py`` checks it
against the installed aiortc)."""

from __future__ import annotations

import contextlib
import datetime
import socket
from typing import TYPE_CHECKING, Any

from aiortc.rtcdtlstransport import RTCCertificate

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection, RTCSessionDescription

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
