"""The data-channel wire format: versioned JSON control messages.

Pure functions, no I/O, so it is the easiest layer to fuzz. Every field is
validated on receipt: a peer is another user's kernel, not a trusted party.
The format is a public contract, described in docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

PROTOCOL_VERSION = 1
CHANNEL_LABEL = "p2p-nb"
"""Label of the one ordered, reliable data channel each pair of peers shares."""
CHANNEL_PROTOCOL = "p2p-nb/1"

MAX_CONTROL_BYTES = 64 * 1024
"""Largest JSON control message accepted (the data channel's own limit is 64 KiB)."""
MAX_TEXT_CHARS = 16 * 1024
"""Longest chat text; longer text belongs in a shared file."""
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class ChatMessage:
    """A chat message as sent and as received (``sender`` is set by the receiver
    from the link it arrived on, never trusted from the payload)."""

    text: str
    seq: int
    ts: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    to: str | None = None
    sender: str = ""
    sender_name: str = ""

    def encode(self) -> str:
        return _dump(
            {
                "v": PROTOCOL_VERSION,
                "type": "chat",
                "id": self.id,
                "seq": self.seq,
                "ts": self.ts,
                "text": self.text,
                "to": self.to,
            }
        )


@dataclass(frozen=True)
class Ping:
    id: str
    ts: float

    def encode(self) -> str:
        return _dump({"v": PROTOCOL_VERSION, "type": "ping", "id": self.id, "ts": self.ts})


@dataclass(frozen=True)
class Pong:
    id: str
    ts: float

    def encode(self) -> str:
        return _dump({"v": PROTOCOL_VERSION, "type": "pong", "id": self.id, "ts": self.ts})


@dataclass(frozen=True)
class UnknownMessage:
    """A well-formed envelope whose type this version does not know.

    Not an error: newer peers may speak more; applications see these as
    ``unknown_message`` events."""

    type: str
    payload: dict[str, Any]


Message = ChatMessage | Ping | Pong | UnknownMessage


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _str(obj: dict[str, Any], key: str, max_len: int, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ProtocolError(f"field {key!r} must not be empty")
    if len(value) > max_len:
        raise ProtocolError(f"field {key!r} is longer than {max_len} characters")
    return value


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"field {key!r} must be a finite number")
    return float(value)


def decode(data: str | bytes) -> Message:
    """Parse and validate one control message, or raise :class:`ProtocolError`."""
    if isinstance(data, bytes | bytearray):
        raise ProtocolError("binary frame on the control path")
    if len(data) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"control message of {len(data)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this peer speaks 1)")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_ID_CHARS:
        raise ProtocolError("field 'type' must be a short non-empty string")
    if kind == "chat":
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ProtocolError("field 'seq' must be a non-negative integer")
        to = obj.get("to")
        if to is not None:
            to = _str(obj, "to", MAX_ID_CHARS)
        return ChatMessage(
            text=_str(obj, "text", MAX_TEXT_CHARS, allow_empty=True),
            seq=seq,
            ts=_number(obj, "ts"),
            id=_str(obj, "id", MAX_ID_CHARS),
            to=to,
        )
    if kind == "ping":
        return Ping(id=_str(obj, "id", MAX_ID_CHARS), ts=_number(obj, "ts"))
    if kind == "pong":
        return Pong(id=_str(obj, "id", MAX_ID_CHARS), ts=_number(obj, "ts"))
    return UnknownMessage(type=kind, payload=obj)
