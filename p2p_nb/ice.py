"""What aiortc's ICE and DTLS do not expose: the size of its UDP sockets'
buffers and which kind of candidate a connection ended up using (both reach
into aiortc/aioice internals, and give up quietly if those move), and a
safety code users compare to rule out a man in the middle."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

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


def safety_code(pc: RTCPeerConnection) -> str | None:
    """Six digits derived from both ends' DTLS fingerprints, the same on both
    peers of an honest link.

    The fingerprints travel through the signaling server, so a hostile server
    could put itself in the middle with certificates of its own; each end would
    then see a different pair of fingerprints, and the two users, comparing
    their codes over another channel (voice, in person), see two different
    codes. ``None`` until both descriptions are known."""
    local = pc.localDescription
    remote = pc.remoteDescription
    if local is None or remote is None:
        return None
    ours, theirs = sdp_fingerprint(local.sdp), sdp_fingerprint(remote.sdp)
    if ours is None or theirs is None:
        return None
    digest = hashlib.sha256("\n".join(sorted((ours, theirs))).encode()).digest()
    number = int.from_bytes(digest[:8], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"
