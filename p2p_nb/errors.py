"""Exceptions raised by p2p-nb.

Every error the package raises on purpose derives from :class:`P2PError`, so
notebook code can catch one type::

    P2PError
    ├── SignalingError        the signaling service refused or lost us
    │   ├── AuthError         the token was missing or wrong
    │   └── AppClosed         the app was disconnected; create a new one
    ├── ProtocolError         a peer or server sent something malformed
    ├── TransferError         a file transfer failed
    ├── PeerUnavailable       no open link to the peer asked for
    ├── TurnError             the TURN server gave us no relay address
    └── P2PTimeoutError       something we waited for did not happen in time
                              (also a builtin ``TimeoutError``)
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of every error raised by p2p-nb."""


class SignalingError(P2PError):
    """Raised when the signaling service cannot be reached, refuses a request
    (bad room name, room full, ...) or drops the connection."""

    def __init__(self, message: str, code: str = "signaling_error") -> None:
        super().__init__(message)
        self.code = code


class AuthError(SignalingError):
    """Raised when the signaling service rejects our credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="unauthorized")


class AppClosed(SignalingError):
    """Raised by every call on an app after ``disconnect()``: its network loop
    and signaling connection are gone for good. A ``SignalingError`` (code
    ``"closed"``) because that is what such calls raised before it existed."""

    def __init__(self, message: str = "this app is disconnected; create a new one") -> None:
        super().__init__(message, code="closed")


class ProtocolError(P2PError):
    """Raised when a message does not follow the wire format in docs/protocol.md.

    Readers catch it, report it as an ``error`` event and keep reading: one bad
    message never closes a link."""


class TransferError(P2PError):
    """Raised when a file transfer is declined, cancelled, corrupted or cut."""


class PeerUnavailable(P2PError):
    """Raised when a message is addressed to a peer we have no open link to."""


class TurnError(P2PError):
    """Reported (as an ``error`` event) when a TURN server is configured but
    gathering produced no relay address: wrong or expired credentials, or the
    server is unreachable. Peers that need it will not connect directly."""


class P2PTimeoutError(P2PError, TimeoutError):
    """Raised when a connection, join or reply did not arrive in time."""
