"""p2p-nb: peer-to-peer chat and file sharing between Jupyter kernels.

Importing the package stays cheap: aiortc and friends load with the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AppClosed,
    AuthError,
    DataFrameTooLarge,
    InviteError,
    NameRefused,
    P2PError,
    P2PTimeoutError,
    PeerUnavailable,
    ProtocolError,
    RelayAuthError,
    ResumeRefused,
    RoomSecretError,
    SafetyCodeError,
    SignalingError,
    TransferError,
    TransferLimitError,
    TurnError,
)
from .invite import new_room_secret

if TYPE_CHECKING:
    from .app import P2PApp
    from .events import Event
    from .widgets import ChatPanel

__all__ = [
    "AppClosed",
    "AuthError",
    "ChatPanel",
    "DataFrameTooLarge",
    "Event",
    "InviteError",
    "NameRefused",
    "P2PApp",
    "P2PError",
    "P2PTimeoutError",
    "PeerUnavailable",
    "ProtocolError",
    "RelayAuthError",
    "ResumeRefused",
    "RoomSecretError",
    "SafetyCodeError",
    "SignalingError",
    "TransferError",
    "TransferLimitError",
    "TurnError",
    "__version__",
    "new_room_secret",
]


def __getattr__(name: str) -> Any:
    if name == "P2PApp":
        from .app import P2PApp

        return P2PApp
    if name == "ChatPanel":
        from .widgets import ChatPanel

        return ChatPanel
    if name == "Event":
        from .events import Event

        return Event
    raise AttributeError(f"module 'p2p_nb' has no attribute {name!r}")


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .jupyter_ext.app import P2PExtensionApp

    return [{"module": "p2p_nb.jupyter_ext.app", "app": P2PExtensionApp}]
