"""Signaling service: introduces peers, never carries their data."""

from .auth import Authority, AuthRefused, Credentials, Identity
from .core import SignalingService
from .limits import ServerLimits
from .standalone import create_app, make_runner

__all__ = [
    "AuthRefused",
    "Authority",
    "Credentials",
    "Identity",
    "ServerLimits",
    "SignalingService",
    "create_app",
    "make_runner",
]
