"""Exceptions raised by p2p-nb.

Every error the package raises on purpose derives from :class:`P2PError`, so
notebook code can catch one type::

    P2PError
    ├── SignalingError        the signaling service refused or lost us
    │   ├── AuthError         the token was missing or wrong
    │   ├── NameRefused       our display name is malformed or already used in the room
    │   ├── ResumeRefused     the server would not give our old peer id back
    │   └── AppClosed         the app was disconnected; create a new one
    ├── ProtocolError         a peer or server sent something malformed
    │   ├── RelayAuthError    a relayed frame was forged, altered or replayed
    │   └── SafetyCodeError   a peer's safety-code nonce broke its commitment
    ├── TransferError         a file transfer failed
    │   ├── TransferLimitError    a peer went over a limit of ours (offers,
    │   │                         transfers in progress, disk space)
    │   └── DataFrameTooLarge     a received DataFrame is above the reading limit
    ├── PreviewRefused        a received table is too big or odd to preview safely
    ├── PeerUnavailable       no open link to the peer asked for
    ├── TurnError             the TURN server gave us no relay address
    ├── RoomSecretError       a peer's signal lacks the room secret's authenticator
    ├── InviteError           an invite link is malformed
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
    """Raised when the signaling service rejects our credentials: a missing or
    wrong token, or an invite that is expired, revoked, altered, from another
    server or for another room (the message says which)."""

    def __init__(self, message: str, code: str = "unauthorized") -> None:
        super().__init__(message, code=code)


class NameRefused(SignalingError):
    """Raised when the server refuses our display name: ``code`` is
    ``"invalid_name"`` (control, format, bidi or zero-width characters, too
    long) or ``"name_taken"`` (another member shows the same name, ignoring
    case and width). Pick another name and join again."""


class ResumeRefused(SignalingError):
    """Raised when a rejoin under our old peer id is refused: ``code`` is
    ``"invalid_resume"`` (the secret does not match this server's key or our
    credentials; joining afresh gives a new id) or ``"peer_in_use"`` (a live
    connection holds the id; the server never replaces it)."""


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


class RelayAuthError(ProtocolError):
    """Reported (as an ``error`` event) when a frame that came through a relay
    (a relaying peer or the signaling server) fails its seal: forged, altered,
    replayed or reordered on the way. The frame is dropped; the link goes on."""


class SafetyCodeError(ProtocolError):
    """Reported (as an ``error`` event) when the peer's safety-code exchange is
    malformed, or its revealed nonce does not match the commitment in its
    offer: someone may be in the middle. The link shows no safety code."""


class TransferError(P2PError):
    """Raised when a file transfer is declined, cancelled, corrupted or cut."""


class TransferLimitError(TransferError):
    """A peer's offer was refused because it would go over one of our limits
    (``TransferSettings``: pending offers, transfers in progress, disk space).
    ``limit`` names the setting; nothing already received is touched."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class DataFrameTooLarge(TransferError):
    """A received DataFrame declares more rows or bytes than the reader allows;
    pass a larger ``max_rows`` / ``max_bytes`` to read it anyway."""


class PreviewRefused(P2PError):
    """Raised when the panel will not preview a received table: its metadata
    promises more than the preview limits (columns, uncompressed bytes, footer
    size), checked before anything is decoded, or it cannot be parsed."""


class PeerUnavailable(P2PError):
    """Raised when a message is addressed to a peer we have no open link to."""


class TurnError(P2PError):
    """Reported (as an ``error`` event) when a TURN server is configured but
    gathering produced no relay address: wrong or expired credentials, or the
    server is unreachable. Peers that need it will not connect directly."""


class RoomSecretError(P2PError):
    """Raised for a room secret that cannot be used (too short, too long), and
    reported (as an ``error`` event, the link then ``lost``) when a peer's
    offer, answer or relay request in a room with a secret has no valid
    authenticator: that peer does not know the secret, or someone in between
    (the signaling server) altered it. The link is never opened."""


class InviteError(P2PError):
    """Raised for an invite link that is not one (wrong shape, no room, no
    token). A well-formed invite the server refuses (expired, revoked, another
    room, altered) is an :class:`AuthError` with the server's reason."""


class P2PTimeoutError(P2PError, TimeoutError):
    """Raised when a connection, join or reply did not arrive in time."""
