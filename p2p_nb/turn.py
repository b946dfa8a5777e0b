"""TURN credentials handed out by the signaling server.

Peers on different networks (NATs, firewalls) often cannot reach each other
directly; a TURN server relays their WebRTC traffic (still end-to-end DTLS
encrypted, unlike the signaling relay). The signaling server knows the TURN
server's shared secret and gives each peer short-lived credentials when it
joins, in the scheme coturn calls ``--use-auth-secret`` (the "TURN REST API"):
username ``"<unix expiry>:<peer id>"``, password
``base64(HMAC-SHA1(secret, username))``. The secret itself never reaches a peer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

TURN_SCHEMES = ("turn:", "turns:")


@dataclass(frozen=True)
class TurnServer:
    """A TURN server the signaling server vouches for."""

    urls: tuple[str, ...]
    """``turn:host:port`` (aiortc uses the first TURN URL a peer is given)."""
    secret: str
    """coturn's ``--static-auth-secret``."""
    ttl: int = 24 * 3600
    """Seconds the credentials stay valid (a peer rejoining gets new ones)."""

    def __post_init__(self) -> None:
        if not self.urls or not all(uses_turn(u) for u in self.urls):
            raise ValueError(f"TURN URLs must start with turn: or turns:, got {self.urls!r}")
        if not self.secret:
            raise ValueError("a TURN server needs its shared secret")
        if self.ttl <= 0:
            raise ValueError("the credentials' lifetime must be positive")

    def credentials(self, user: str, now: float | None = None) -> dict[str, Any]:
        """An ``RTCIceServer``-shaped dict for ``user``, valid for :attr:`ttl`."""
        username = f"{int(now if now is not None else time.time()) + self.ttl}:{user}"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return {
            "urls": list(self.urls),
            "username": username,
            "credential": base64.b64encode(digest).decode(),
        }


def uses_turn(url: str) -> bool:
    return url.startswith(TURN_SCHEMES)
