"""Limits of the signaling service: one named, documented setting each.

The service only introduces peers, so everything it accepts is small; the
defaults are sized for that and refuse anything that looks like bulk data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ROOM_CHARS = 64
ROOM_NAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_ROOM_CHARS - 1}}}$")
"""Room names: 1-64 characters, letters, digits, ``_ . -``, not starting with punctuation."""


@dataclass(frozen=True)
class ServerLimits:
    """Limits enforced per connection, per identity and per room (see docs/protocol.md)."""

    max_peers_per_room: int = 32
    """A full mesh of N peers needs N·(N-1)/2 links; beyond ~32 it stops being useful."""
    max_rooms: int = 1000
    max_name_length: int = 64
    max_payload_bytes: int = 64 * 1024
    """Largest event payload answered with a ``too_large`` error; SDP offers are a few KiB."""
    max_frame_bytes: int = 1024 * 1024
    """Largest WebSocket frame read at all; a bigger one closes the connection (code 1009)."""
    max_capabilities_bytes: int = 4096
    max_sdp_bytes: int = 32 * 1024
    max_candidate_bytes: int = 2048
    rate_per_second: float = 50.0
    """Sustained events per second per connection (token bucket)."""
    rate_burst: int = 200
    """Events a connection may send at once before the rate applies."""
    resume_grace: float = 5.0
    """Seconds a peer whose connection dropped keeps its slot (and id) before the
    room hears ``peer_left``; a client that reconnects in time resumes unseen."""
    allow_relay: bool = True
    """Carry data-channel frames between two peers that cannot connect directly."""
    max_relay_bytes: int = 64 * 1024 + 64
    """Largest relayed frame: the data channel's own message limit, plus the
    few bytes a sealed frame adds (counter, kind, tag)."""
    max_connections_per_identity: int = 128
    """Open connections one identity (one Jupyter user, one token) may hold; the
    rate limit is per connection, so this also bounds what one party can send."""
    max_rooms_per_identity: int = 64
    """Rooms one identity may have created that still exist, so one credential
    holder cannot fill ``max_rooms`` on its own."""
    resume_probe_timeout: float = 3.0
    """Seconds a live connection has to answer the server's ``probe`` when
    another connection resumes its peer id; one that answers keeps its id (the
    resume is refused), one that does not is taken for dead and replaced."""
