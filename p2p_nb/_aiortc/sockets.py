"""aioice's sockets and route, which aiortc does not expose.

Why this module exists: a data channel needs UDP buffers larger than the
OS default (a 64 KiB-message stream overflows ~208 KiB and SCTP stalls for
its 1 s timer), a link's quality names the route ICE nominated (direct, NAT,
TURN), and a ``close()`` that overtakes a gather or is cancelled halfway must
not leave sockets open. All of that is only reachable through aiortc's and
aioice's private attributes; each function here gives up quietly if they
move (nothing breaks, only the tuning or the route name is lost)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection, RTCSessionDescription

SOCKET_BUFFER_BYTES = 4 * 2**20
"""UDP buffer size asked for each ICE socket (the OS caps it at net.core.rmem_max)."""


def ice_connection(pc: RTCPeerConnection) -> Any:
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
    for stun in list(getattr(ice_connection(pc), "_protocols", [])):
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


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """``pc.close()`` that finishes even when its caller is cancelled.

    aiortc closes the SCTP and DTLS transports before the ICE sockets, with
    awaits in between: a close cancelled there (the app leaving while a
    link's worker replaces its connection) leaves the sockets open for good.
    So the close runs to its end, and only then does the cancellation go on."""
    closing = asyncio.ensure_future(pc.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait([closing])
        raise


async def close_stray_sockets(pc: RTCPeerConnection) -> None:
    """Close the sockets a gather added to ``pc``'s ICE connection after it was
    closed (see :func:`set_local_description`)."""
    connection = ice_connection(pc)
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
    pair = getattr(ice_connection(pc), "_nominated", {}).get(1)
    if pair is None:
        return None
    try:
        kinds = (str(pair.local_candidate.type), str(pair.remote_candidate.type))
    except AttributeError:
        return None
    return "relay" if "relay" in kinds else kinds[0]
