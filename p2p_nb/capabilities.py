"""What a peer can do and offer: its role, services, resources and location.

Each peer advertises its :class:`Capabilities` when it joins (in the signaling
``join``, so late joiners get everyone's in the roster) and again whenever they
change (a ``capabilities`` message on every data channel and an ``update``
event through signaling, for peers it has no link to). Receivers validate them
like every other message and keep only the highest ``rev`` seen from a peer.
The wire form is described in docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

ROLES = ("basic", "relay", "super_peer")
STANDARD_SERVICES = ("messaging", "file_transfer", "relay")
"""Services the package itself knows; applications may advertise any other name."""
DEFAULT_SERVICES = ("messaging", "file_transfer")
MAX_SERVICES = 32
MAX_SERVICE_CHARS = 64
MAX_LOCATION_CHARS = 64
MAX_CAPABILITIES_BYTES = 4096
"""Same as the signaling server's ``max_capabilities_bytes``."""
MAX_COUNT = 2**53
"""Integers (connections, bytes, bytes/s) above this are refused: JSON loses precision."""

_RESOURCE_FIELDS = ("max_connections", "bandwidth", "storage")
_LOCATION_FIELDS = ("region", "timezone")


@dataclass(frozen=True)
class Capabilities:
    """A peer's advertised capabilities (immutable; change them with
    ``app.update_capabilities(**changes)``)."""

    role: str = "basic"
    """``basic``, ``relay`` or ``super_peer``."""
    services: tuple[str, ...] = DEFAULT_SERVICES
    """``messaging``, ``file_transfer``, ``relay`` or any custom name."""
    max_connections: int | None = None
    """Most direct links this peer accepts (``None``: no limit). The mesh honours it."""
    bandwidth: int | None = None
    """Bytes per second the peer is willing to carry (advisory)."""
    storage: int | None = None
    """Bytes of storage offered to others (advisory)."""
    region: str | None = None
    timezone: str | None = None
    """IANA time zone name, e.g. ``Europe/Paris``."""
    rev: int = field(default=0, compare=False)
    """Revision, raised by each update; older revisions are ignored by receivers."""

    def __post_init__(self) -> None:
        # Normalise lists to tuples so the dataclass stays hashable and immutable.
        if not isinstance(self.services, tuple) and isinstance(self.services, list):
            object.__setattr__(self, "services", tuple(self.services))
        validate(self)

    def provides(self, service: str) -> bool:
        return service in self.services

    def to_wire(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "services": list(self.services),
            "resources": {k: getattr(self, k) for k in _RESOURCE_FIELDS},
            "location": {k: getattr(self, k) for k in _LOCATION_FIELDS},
            "rev": self.rev,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Capabilities:
        """Validate a received capabilities object; raise :class:`ProtocolError`.

        An empty object (a client that advertises nothing) means the defaults.
        """
        if not isinstance(obj, dict):
            raise ProtocolError("capabilities must be an object")
        try:
            size = len(json.dumps(obj, separators=(",", ":")))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"capabilities are not JSON: {exc}") from exc
        if size > MAX_CAPABILITIES_BYTES:
            raise ProtocolError(f"capabilities of {size} bytes exceed {MAX_CAPABILITIES_BYTES}")
        resources = obj.get("resources", {})
        location = obj.get("location", {})
        if not isinstance(resources, dict) or not isinstance(location, dict):
            raise ProtocolError("capabilities 'resources' and 'location' must be objects")
        services = obj.get("services", list(DEFAULT_SERVICES))
        if not isinstance(services, list):
            raise ProtocolError("capabilities 'services' must be a list of strings")
        try:
            return cls(
                role=obj.get("role", "basic"),
                services=tuple(services),
                max_connections=resources.get("max_connections"),
                bandwidth=resources.get("bandwidth"),
                storage=resources.get("storage"),
                region=location.get("region"),
                timezone=location.get("timezone"),
                rev=obj.get("rev", 0),
            )
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"invalid capabilities: {exc}") from exc

    def replace(self, **changes: Any) -> Capabilities:
        """A copy with ``changes`` applied and ``rev`` raised by one (validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)} | (
            {"rev"} & set(changes)
        )
        if unknown:
            raise TypeError(f"unknown capability field(s): {', '.join(sorted(unknown))}")
        if isinstance(changes.get("services"), list | set | frozenset):
            changes["services"] = tuple(changes["services"])
        return dataclasses.replace(self, **changes, rev=self.rev + 1)


def _count(name: str, value: Any, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer or None")
    if not minimum <= value <= MAX_COUNT:
        raise ValueError(f"{name} must be between {minimum} and {MAX_COUNT}")


def _text(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_LOCATION_CHARS:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_LOCATION_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name} must not contain control characters")


def validate(caps: Capabilities) -> None:
    """Raise :class:`ValueError` if a field is out of range (used locally and on receipt)."""
    if caps.role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {caps.role!r}")
    if not isinstance(caps.services, tuple):
        raise ValueError("services must be a list of strings")
    if len(caps.services) > MAX_SERVICES:
        raise ValueError(f"at most {MAX_SERVICES} services")
    for service in caps.services:
        if not isinstance(service, str) or not service or len(service) > MAX_SERVICE_CHARS:
            raise ValueError(f"each service must be a string of 1-{MAX_SERVICE_CHARS} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in service):
            raise ValueError("service names must not contain control characters")
    if len(set(caps.services)) != len(caps.services):
        raise ValueError("services must not repeat")
    _count("max_connections", caps.max_connections, minimum=0)
    _count("bandwidth", caps.bandwidth, minimum=0)
    _count("storage", caps.storage, minimum=0)
    _text("region", caps.region)
    _text("timezone", caps.timezone)
    _count("rev", caps.rev, minimum=0)
