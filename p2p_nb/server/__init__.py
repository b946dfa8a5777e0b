"""Signaling service: introduces peers, never carries their data."""

from .core import AuthRefused, SignalingService
from .limits import ServerLimits
from .standalone import create_app

__all__ = ["AuthRefused", "ServerLimits", "SignalingService", "create_app"]
