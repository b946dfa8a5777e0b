"""The data-channel wire format: versioned JSON control messages.

Pure functions, no I/O, so it is the easiest layer to fuzz. Every field is
validated on receipt: a peer is another user's kernel, not a trusted party.
The format is a public contract, described in docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import secrets
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from .capabilities import Capabilities
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
MAX_REASON_CHARS = 1000
"""Longest ``reason`` of a file control message (``file-cancel``, ``file-decline``)."""

_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


def next_message_id() -> str:
    """Unique per process run: a random prefix and a counter (uuid4 per chat
    message was 7 % of the sender's time in a message-rate profile)."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


@dataclass(frozen=True)
class ChatMessage:
    """A chat message as sent and as received (``sender`` is set by the receiver
    from the link it arrived on, never trusted from the payload)."""

    text: str
    seq: int
    ts: float
    id: str = field(default_factory=next_message_id)
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
class ChatAck:
    """The highest chat ``seq`` received from the peer at the other end: it may
    forget its copies up to there (and sends the rest again after a drop)."""

    seq: int

    def encode(self) -> str:
        return _dump({"v": PROTOCOL_VERSION, "type": "chat-ack", "seq": self.seq})


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
class CapabilitiesUpdate:
    """The sender's capabilities changed (``rev`` orders updates)."""

    capabilities: Capabilities

    def encode(self) -> str:
        return _dump(
            {"v": PROTOCOL_VERSION, "type": "capabilities", "caps": self.capabilities.to_wire()}
        )


LINK_REPORT_STATES = frozenset(
    {"new", "connecting", "connected", "reconnecting", "relayed", "limited", "lost", "closed"}
)
MAX_REPORTED_LINKS = 256


@dataclass(frozen=True)
class MeshReport:
    """The sender's links, as it sees them: ``{peer_id: state}``; ``request``
    asks the receiver to answer with its own report."""

    links: dict[str, str]
    request: bool = False

    def encode(self) -> str:
        return _dump(
            {
                "v": PROTOCOL_VERSION,
                "type": "mesh-report",
                "links": self.links,
                "request": self.request,
            }
        )


@dataclass(frozen=True)
class SafetyReveal:
    """The offerer's safety-code nonce, sent on the data channel once it opens;
    its SHA-256 commitment was in the offer (see :mod:`p2p_nb.safety`)."""

    nonce: str

    def encode(self) -> str:
        return _dump({"v": PROTOCOL_VERSION, "type": "safety-reveal", "nonce": self.nonce})


@dataclass(frozen=True)
class RelayOpen:
    """The answerer's first frame on a relay session both ends agreed to in
    signaling (``relay`` / ``relay-accept``): "the relay carries our traffic
    from now on". Sealed like every relayed frame."""

    def encode(self) -> str:
        return _dump({"v": PROTOCOL_VERSION, "type": "relay-open"})


@dataclass(frozen=True)
class RelayFrame:
    """One data-channel frame carried through a peer that offers the ``relay`` service.

    The origin sends it to the relaying peer with ``to`` (the final receiver);
    the relaying peer forwards it with ``sender`` (wire field ``from``: the
    peer it came from, set by the relay from the link it arrived on). ``data``
    is the frame unchanged: a JSON control message, or a binary chunk frame
    (base64 on the wire)."""

    data: str | bytes
    to: str | None = None
    sender: str | None = None

    def encode(self) -> str:
        obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "relay-frame"}
        if self.to is not None:
            obj["to"] = self.to
        if self.sender is not None:
            obj["from"] = self.sender
        if isinstance(self.data, bytes | bytearray):
            obj["binary"] = True
            obj["data"] = base64.b64encode(self.data).decode("ascii")
        else:
            obj["binary"] = False
            obj["data"] = self.data
        return _dump(obj)


@dataclass(frozen=True)
class UnknownMessage:
    """A well-formed envelope whose type this version does not know.

    Not an error: newer peers may speak more; applications see these as
    ``unknown_message`` events."""

    type: str
    payload: dict[str, Any]
    seq: int | None = None
    """The envelope's ``seq``, when it has a valid one (p2p-nb's application
    messages do: they are delivered like chat)."""


@dataclass(frozen=True)
class FileOffer:
    """Sender → receiver: a file is on offer (``resume``: an interrupted one, again)."""

    id: str
    name: str
    size: int
    sha256: str
    kind: str = "file"
    meta: dict[str, Any] = field(default_factory=dict)
    resume: bool = False

    def encode(self) -> str:
        return _dump(
            {
                "v": PROTOCOL_VERSION,
                "type": "file-offer",
                "id": self.id,
                "name": self.name,
                "size": self.size,
                "sha256": self.sha256,
                "kind": self.kind,
                "meta": self.meta,
                "resume": self.resume,
            }
        )


@dataclass(frozen=True)
class FileControl:
    """The small transfer messages: ``file-accept`` / ``file-ack`` (``offset`` =
    bytes the receiver holds), ``file-complete`` (all bytes sent),
    ``file-done`` (verified and saved), ``file-decline`` / ``file-cancel``
    (``reason``)."""

    type: str
    id: str
    offset: int = 0
    reason: str = ""

    def encode(self) -> str:
        return _dump(
            {
                "v": PROTOCOL_VERSION,
                "type": self.type,
                "id": self.id,
                "offset": self.offset,
                "reason": self.reason,
            }
        )


FILE_CONTROL_TYPES = frozenset(
    {"file-accept", "file-ack", "file-complete", "file-done", "file-decline", "file-cancel"}
)
FILE_KINDS = frozenset({"file", "dataframe"})
MAX_FILE_NAME_CHARS = 1024
"""Longest offered name accepted on the wire; the receiver shortens it further to save."""
MAX_META_BYTES = 32 * 1024

Message = (
    ChatMessage
    | ChatAck
    | Ping
    | Pong
    | FileOffer
    | FileControl
    | CapabilitiesUpdate
    | MeshReport
    | RelayOpen
    | RelayFrame
    | SafetyReveal
    | UnknownMessage
)
BUILTIN_TYPES = frozenset(
    {
        "chat",
        "chat-ack",
        "ping",
        "pong",
        "file-offer",
        "capabilities",
        "mesh-report",
        "relay-open",
        "relay-frame",
        "safety-reveal",
        "rekey",
    }
    | FILE_CONTROL_TYPES
)
"""Types this version defines; applications register handlers only for other types."""


CUSTOM_ENVELOPE = ("v", "type", "seq")
"""Fields of a custom message that are the envelope's, not the payload's."""


def encode_custom(kind: str, payload: dict[str, Any], seq: int | None = None) -> str:
    """An application's own message: the envelope plus ``payload``'s fields.

    With ``seq`` (the sender's counter it shares with chat) it is delivered
    like chat: acknowledged, sent again after a link failure, never twice."""
    if not isinstance(kind, str) or not kind or len(kind) > MAX_ID_CHARS:
        raise ValueError(f"a message type is a non-empty string of at most {MAX_ID_CHARS}")
    if kind in BUILTIN_TYPES:
        raise ValueError(f"{kind!r} is a built-in message type")
    return encode_envelope(kind, payload, seq)


def encode_envelope(kind: str, payload: dict[str, Any], seq: int | None = None) -> str:
    """The envelope plus ``payload``'s fields, with no check of ``kind``: for
    :func:`encode_custom`, and for built-in messages whose owner module builds
    and checks their payload itself (``rekey``, in ``rekey.py``)."""
    if not isinstance(payload, dict):
        raise TypeError("payload must be a dict")
    if any(key in payload for key in CUSTOM_ENVELOPE):
        raise ValueError("payload must not contain the envelope fields 'v', 'type' and 'seq'")
    envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": kind}
    if seq is not None:
        envelope["seq"] = seq
    try:
        data = _dump({**envelope, **payload})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from exc
    if len(data.encode()) > MAX_CONTROL_BYTES:
        raise ValueError(f"message exceeds {MAX_CONTROL_BYTES} bytes; share it as a file")
    return data


# Binary frames: one file chunk each.
#   byte 0      frame type (1 = chunk)
#   bytes 1-16  transfer id (the 32-hex-digit id, as 16 raw bytes)
#   bytes 17-24 offset of the payload in the file, unsigned big-endian
#   bytes 25-   payload
CHUNK_FRAME = 1
CHUNK_HEADER = struct.Struct(">B16sQ")
MAX_FRAME_BYTES = 64 * 1024
"""Largest binary frame sent: every WebRTC stack accepts 64 KiB messages."""
CHUNK_SIZE = MAX_FRAME_BYTES - CHUNK_HEADER.size
MAX_RELAY_FRAME_BYTES = 2 * MAX_CONTROL_BYTES + 1024
MAX_SEALED_FRAME_BYTES = MAX_FRAME_BYTES + 64
"""A relayed frame is sealed (p2p_nb.relaykey): a data-channel frame plus its
counter, kind and tag (25 bytes), rounded up."""
"""Largest ``relay-frame`` message: a wrapped frame (a base64 chunk frame, or a
control message whose quotes and backslashes JSON escapes again) plus its envelope."""


def encode_chunk(transfer_id: str, offset: int, payload: bytes) -> bytes:
    return CHUNK_HEADER.pack(CHUNK_FRAME, bytes.fromhex(transfer_id), offset) + payload


def decode_chunk(frame: bytes) -> tuple[str, int, memoryview]:
    """Split a chunk frame into (transfer id, offset, payload) or raise ProtocolError."""
    if len(frame) < CHUNK_HEADER.size:
        raise ProtocolError(f"binary frame of {len(frame)} bytes is shorter than its header")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"binary frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    kind, raw_id, offset = CHUNK_HEADER.unpack_from(frame)
    if kind != CHUNK_FRAME:
        raise ProtocolError(f"unknown binary frame type {kind}")
    return raw_id.hex(), offset, memoryview(frame)[CHUNK_HEADER.size :]


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def _utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8: the limits count bytes (docs/protocol.md)."""
    return len(text.encode("utf-8", "surrogatepass"))


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


def _seq(obj: dict[str, Any]) -> int:
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError("field 'seq' must be a non-negative integer")
    return seq


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"field {key!r} must be a finite number")
    return float(value)


def decode(data: str | bytes) -> Message:
    """Parse and validate one control message, or raise :class:`ProtocolError`."""
    if isinstance(data, bytes | bytearray):
        raise ProtocolError("binary frame on the control path")
    too_big = ProtocolError(f"control message exceeds {MAX_CONTROL_BYTES} bytes")
    if len(data) > MAX_RELAY_FRAME_BYTES:  # characters: at least as many bytes
        raise too_big
    # only a relay-frame may be larger; UTF-8 takes at most 4 bytes a character
    oversized = len(data) > MAX_CONTROL_BYTES // 4 and _utf8_length(data) > MAX_CONTROL_BYTES
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise (too_big if oversized else ProtocolError(f"not valid JSON: {exc}")) from exc
    if oversized and (not isinstance(obj, dict) or obj.get("type") != "relay-frame"):
        raise too_big
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this peer speaks 1)")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_ID_CHARS:
        raise ProtocolError("field 'type' must be a short non-empty string")
    if kind == "relay-frame":
        return _relay_frame(obj)
    if kind == "chat-ack":
        return ChatAck(seq=_seq(obj))
    if kind == "chat":
        seq = _seq(obj)
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
    if kind == "file-offer":
        return _file_offer(obj)
    if kind in FILE_CONTROL_TYPES:
        offset = obj.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ProtocolError("field 'offset' must be a non-negative integer")
        reason = obj.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise ProtocolError(
                f"field 'reason' must be a string of at most {MAX_REASON_CHARS} characters"
            )
        return FileControl(type=kind, id=_transfer_id(obj), offset=offset, reason=reason)
    if kind == "ping":
        return Ping(id=_str(obj, "id", MAX_ID_CHARS), ts=_number(obj, "ts"))
    if kind == "pong":
        return Pong(id=_str(obj, "id", MAX_ID_CHARS), ts=_number(obj, "ts"))
    if kind == "capabilities":
        return CapabilitiesUpdate(Capabilities.from_wire(obj.get("caps")))
    if kind == "mesh-report":
        return _mesh_report(obj)
    if kind == "relay-open":
        return RelayOpen()
    if kind == "safety-reveal":
        return SafetyReveal(nonce=_str(obj, "nonce", 64))
    number = obj.get("seq")
    valid = isinstance(number, int) and not isinstance(number, bool) and number >= 0
    return UnknownMessage(type=kind, payload=obj, seq=number if valid else None)


def sequence_of(msg: Message) -> int | None:
    """The sender's number of a message delivered like chat (acknowledged,
    sent again after a link failure); ``None`` for every other message."""
    return msg.seq if isinstance(msg, ChatMessage | UnknownMessage) else None


def _mesh_report(obj: dict[str, Any]) -> MeshReport:
    links = obj.get("links")
    if not isinstance(links, dict) or len(links) > MAX_REPORTED_LINKS:
        raise ProtocolError(
            f"field 'links' must be an object of at most {MAX_REPORTED_LINKS} entries"
        )
    for pid, state in links.items():
        if not pid or len(pid) > MAX_ID_CHARS or state not in LINK_REPORT_STATES:
            raise ProtocolError(f"bad link entry {pid!r}: {state!r}")
    request = obj.get("request", False)
    if not isinstance(request, bool):
        raise ProtocolError("field 'request' must be a boolean")
    return MeshReport(links=dict(links), request=request)


def _relay_frame(obj: dict[str, Any]) -> RelayFrame:
    to = _str(obj, "to", MAX_ID_CHARS) if "to" in obj else None
    sender = _str(obj, "from", MAX_ID_CHARS) if "from" in obj else None
    if (to is None) == (sender is None):
        raise ProtocolError("a relay-frame has exactly one of the fields 'to' and 'from'")
    binary = obj.get("binary", False)
    if not isinstance(binary, bool):
        raise ProtocolError("field 'binary' must be a boolean")
    data: str | bytes
    if binary:
        text = _str(obj, "data", MAX_RELAY_FRAME_BYTES)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"field 'data' is not valid base64: {exc}") from exc
        if not data or len(data) > MAX_SEALED_FRAME_BYTES:
            raise ProtocolError(f"a relayed binary frame is 1 to {MAX_SEALED_FRAME_BYTES} bytes")
    else:
        data = _str(obj, "data", MAX_CONTROL_BYTES)
    return RelayFrame(data=data, to=to, sender=sender)


def _transfer_id(obj: dict[str, Any]) -> str:
    tid = _str(obj, "id", 32)
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise ProtocolError("field 'id' of a transfer must be 32 lowercase hex digits")
    return tid


def _file_offer(obj: dict[str, Any]) -> FileOffer:
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError("field 'size' must be a non-negative integer")
    digest = _str(obj, "sha256", 64)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ProtocolError("field 'sha256' must be 64 lowercase hex digits")
    kind = obj.get("kind", "file")
    if kind not in FILE_KINDS:
        raise ProtocolError(f"field 'kind' must be one of {sorted(FILE_KINDS)}")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict) or _utf8_length(_dump(meta)) > MAX_META_BYTES:
        raise ProtocolError(f"field 'meta' must be an object of at most {MAX_META_BYTES} bytes")
    resume = obj.get("resume", False)
    if not isinstance(resume, bool):
        raise ProtocolError("field 'resume' must be a boolean")
    return FileOffer(
        id=_transfer_id(obj),
        name=_str(obj, "name", MAX_FILE_NAME_CHARS, allow_empty=True),
        size=size,
        sha256=digest,
        kind=kind,
        meta=meta,
        resume=resume,
    )
