"""docs/vectors.json, the protocol's wire truth, against the Python implementation.

tests/web/unit.js runs the same vectors against the web client, so both
implementations are held to one file: every constant, every crypto vector of
docs/protocol.md, the invite token layout, and codec frames, valid and invalid.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2p_nb import protocol, safety
from p2p_nb.errors import ProtocolError, RoomSecretError
from p2p_nb.rekey import Rekey
from p2p_nb.relaykey import KeyPair, RelaySeal, derive_keys
from p2p_nb.roomkey import RoomKey
from p2p_nb.server.auth import AuthRefused
from p2p_nb.server.invites import InviteBook

from .vectors import VECTORS_FILE, expand, vectors

PYTHON_CONSTANTS: dict[str, list[str]] = {
    "protocol_version": ["p2p_nb.protocol.PROTOCOL_VERSION", "p2p_nb.server.core.PROTOCOL_VERSION"],
    "channel_label": ["p2p_nb.protocol.CHANNEL_LABEL"],
    "channel_protocol": ["p2p_nb.protocol.CHANNEL_PROTOCOL"],
    "max_control_bytes": ["p2p_nb.protocol.MAX_CONTROL_BYTES"],
    "max_relay_frame_bytes": ["p2p_nb.protocol.MAX_RELAY_FRAME_BYTES"],
    "max_text_chars": ["p2p_nb.protocol.MAX_TEXT_CHARS"],
    "max_id_chars": ["p2p_nb.protocol.MAX_ID_CHARS"],
    "max_file_name_chars": ["p2p_nb.protocol.MAX_FILE_NAME_CHARS"],
    "max_meta_bytes": ["p2p_nb.protocol.MAX_META_BYTES"],
    "max_reason_chars": ["p2p_nb.protocol.MAX_REASON_CHARS"],
    "max_reported_links": ["p2p_nb.protocol.MAX_REPORTED_LINKS"],
    "max_frame_bytes": ["p2p_nb.protocol.MAX_FRAME_BYTES"],
    "chunk_frame": ["p2p_nb.protocol.CHUNK_FRAME"],
    "chunk_header_bytes": ["p2p_nb.protocol.CHUNK_HEADER.size"],
    "chunk_size": ["p2p_nb.protocol.CHUNK_SIZE"],
    "max_sealed_frame_bytes": ["p2p_nb.protocol.MAX_SEALED_FRAME_BYTES"],
    "batch_max_chars": ["p2p_nb.outgoing.BATCH_MAX_CHARS"],
    "max_outbox": ["p2p_nb.outgoing.MAX_OUTBOX"],
    "max_unacked": ["p2p_nb.outgoing.MAX_UNACKED"],
    "ack_delay_seconds": ["p2p_nb.outgoing.ACK_DELAY"],
    "max_name_chars": ["p2p_nb.names.MAX_NAME_CHARS"],
    "max_room_chars": ["p2p_nb.server.limits.MAX_ROOM_CHARS"],
    "safety_label": ["p2p_nb.safety.LABEL"],
    "room_label": ["p2p_nb.roomkey.LABEL"],
    "relay_label": ["p2p_nb.relaykey.LABEL"],
    "invite_label": ["p2p_nb.server.invites.LABEL"],
    "invite_prefix": ["p2p_nb.invite.INVITE_PREFIX", "p2p_nb.server.invites.PREFIX"],
    "invite_secret_bytes": ["p2p_nb.invite.SECRET_BYTES"],
    "scrypt_n": ["p2p_nb.roomkey.SCRYPT_N"],
    "scrypt_r": ["p2p_nb.roomkey.SCRYPT_R"],
    "scrypt_p": ["p2p_nb.roomkey.SCRYPT_P"],
    "min_secret_chars": ["p2p_nb.roomkey.MIN_SECRET_CHARS"],
    "max_secret_chars": ["p2p_nb.roomkey.MAX_SECRET_CHARS"],
    "rekey_type": ["p2p_nb.rekey.REKEY_TYPE"],
    "max_epoch": ["p2p_nb.rekey.MAX_EPOCH"],
    "max_rekey_members": ["p2p_nb.rekey.MAX_MEMBERS"],
    "max_rekeys_per_minute": ["p2p_nb.rekey.MAX_REKEYS_PER_MINUTE"],
    "transfer_window": ["p2p_nb.transfer.TransferSettings.window"],
    "transfer_window_rate": ["p2p_nb.transfer.TransferSettings.window_rate"],
    "transfer_max_window": ["p2p_nb.transfer.TransferSettings.max_window"],
    "transfer_ack_every": ["p2p_nb.transfer.TransferSettings.ack_every"],
    "transfer_high_water": ["p2p_nb.transfer.TransferSettings.high_water"],
    "transfer_low_water": ["p2p_nb.peerlink.LOW_WATER"],
    "max_file_bytes": ["p2p_nb.transfer.TransferSettings.max_file_bytes"],
    "max_pending_offers_per_peer": ["p2p_nb.transfer.TransferSettings.max_pending_offers_per_peer"],
}
"""Where the Python code keeps each constant of the file (every one of them)."""


def resolve(path: str) -> Any:
    """``package.module.NAME.attr`` → the value (the longest importable prefix is the module)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr)
        return value
    raise LookupError(path)


def test_every_constant_of_the_file_is_the_codes() -> None:
    constants = vectors("constants")
    assert set(constants) == set(PYTHON_CONSTANTS), "map each constant of docs/vectors.json"
    wrong = {}
    for name, value in constants.items():
        for path in PYTHON_CONSTANTS[name]:
            code = resolve(path)
            if isinstance(code, bytes):  # labels the code keeps as bytes
                code = code.decode()
            if code != value or type(code) is not type(value):
                wrong[path] = (code, value)
    assert not wrong, wrong


# --- codec -------------------------------------------------------------------------


WIRE_TYPES: dict[type[Any], str] = {
    protocol.ChatMessage: "chat",
    protocol.ChatAck: "chat-ack",
    protocol.Ping: "ping",
    protocol.Pong: "pong",
    protocol.FileOffer: "file-offer",
}


def type_of(message: protocol.Message) -> str:
    """The wire ``type`` of a decoded message."""
    if isinstance(message, protocol.UnknownMessage | protocol.FileControl):
        return message.type
    return WIRE_TYPES[type(message)]


def field_of(message: protocol.Message, name: str) -> Any:
    """A decoded field, by its wire name."""
    if isinstance(message, protocol.UnknownMessage) and name != "seq":
        return message.payload[name]
    return getattr(message, name)


@pytest.mark.parametrize("vector", vectors("codec")["valid"], ids=lambda v: v["type"])
def test_valid_frames_decode_to_their_fields(vector: dict[str, Any]) -> None:
    message = protocol.decode(expand(vector["wire"]))
    if vector.get("unknown"):
        assert isinstance(message, protocol.UnknownMessage)
    else:
        assert not isinstance(message, protocol.UnknownMessage)
    assert type_of(message) == vector["type"]
    for name, value in vector["fields"].items():
        assert field_of(message, name) == value, name


def test_built_in_messages_encode_to_the_files_wire() -> None:
    """The same bytes the web client's ``codec.encode`` gives (unit.js checks that side)."""
    encoded = {
        "chat": lambda f: protocol.ChatMessage(**f).encode(),
        "chat-ack": lambda f: protocol.ChatAck(**f).encode(),
        "ping": lambda f: protocol.Ping(**f).encode(),
        "pong": lambda f: protocol.Pong(**f).encode(),
    }
    done = 0
    for vector in vectors("codec")["valid"]:
        wire = expand(vector["wire"])
        if vector["type"] in encoded and set(json.loads(wire)) == {"v", "type", *vector["fields"]}:
            assert encoded[vector["type"]](vector["fields"]) == wire
            done += 1
    assert done >= 4


@pytest.mark.parametrize("vector", vectors("codec")["invalid"], ids=lambda v: v["why"])
def test_invalid_frames_are_protocol_errors(vector: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(expand(vector["wire"]))


def test_chunk_frames_follow_the_layout() -> None:
    chunk = vectors("codec")["chunk"]
    payload = bytes.fromhex(chunk["payload"])
    assert protocol.encode_chunk(chunk["id"], chunk["offset"], payload).hex() == chunk["frame"]
    tid, offset, data = protocol.decode_chunk(bytes.fromhex(chunk["frame"]))
    assert (tid, offset, bytes(data)) == (chunk["id"], chunk["offset"], payload)
    for bad in chunk["invalid"]:
        with pytest.raises(ProtocolError):
            protocol.decode_chunk(bytes.fromhex(expand(bad["frame"])))


# --- crypto ------------------------------------------------------------------------


def test_the_safety_code_vector() -> None:
    v = vectors("safety")
    assert safety.commitment(v["nonce_o"]) == v["commit"]
    digest = safety.code_digest(v["fp_o"], v["fp_a"], v["nonce_o"], v["nonce_a"])
    assert safety.code_of(digest) == v["code"]
    assert safety.pin_of(digest) == v["pin"]


def test_the_room_key_vector() -> None:
    v = vectors("room_key")
    key = RoomKey.derive(v["room"], v["secret"])
    assert key.auth_key.hex() == v["auth_key"]
    assert key.relay_salt.hex() == v["relay_salt"]
    assert key.authenticate(v["from"], v["to"], v["offer"]) == v["auth"]
    assert key.authenticate(v["from"], v["to"], v["odd_offer"]) == v["odd_auth"]
    key.check(v["from"], v["to"], {**v["offer"], "auth": v["auth"]})
    for bad in (
        {**v["offer"], "auth": "00" * 32},
        v["offer"],  # no authenticator
        {**v["offer"], "sdp": v["offer"]["sdp"] + v["refused_appended_ice"], "auth": v["auth"]},
    ):
        with pytest.raises(RoomSecretError):
            key.check(v["from"], v["to"], bad)
    with pytest.raises(RoomSecretError):
        key.check(v["to"], v["from"], {**v["offer"], "auth": v["auth"]})  # the other direction
    with pytest.raises(RoomSecretError, match="valid Unicode"):  # no UTF-8 to stretch
        RoomKey.derive(v["room"], "\ud800" * 9)


def test_the_relay_vector() -> None:
    v = vectors("relay")

    def pair(private_hex: str) -> KeyPair:
        return KeyPair(X25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex)))

    offerer, answerer = pair(v["offerer_private"]), pair(v["answerer_private"])
    assert (offerer.public_b64, answerer.public_b64) == (v["offerer_public"], v["answerer_public"])
    forward, backward = derive_keys(
        offerer.shared(v["answerer_public"]),
        session=v["session"],
        offerer=v["offerer"],
        answerer=v["answerer"],
        via=v["via"],
    )
    assert (forward.hex(), backward.hex()) == (v["forward"], v["backward"])
    common = {"session": v["session"], "via": v["via"]}
    seal = RelaySeal.agree(
        offerer, v["answerer_public"], local_id=v["offerer"], peer_id=v["answerer"], **common
    )
    opener = RelaySeal.agree(
        answerer, v["offerer_public"], local_id=v["answerer"], peer_id=v["offerer"], **common
    )
    frame = seal.seal(v["plain"])
    assert frame.hex() == v["sealed"]
    assert opener.open(frame) == v["plain"]


def test_the_rekey_vectors() -> None:
    v = vectors("rekey")
    valid = v["valid"]
    rekey = Rekey.from_payload(valid)
    assert rekey.payload() == {**valid, "out": valid.get("out", [])}
    incoming = Rekey.from_payload({**valid, **v["incoming"], "members": {v["incoming"]["by"]: ""}})
    for case in v["supersedes"]:
        assert incoming.supersedes(case["held_epoch"], case["held_by"]) is case["wins"], case
    for bad in v["invalid"]:
        with pytest.raises(ProtocolError, match="rekey"):
            Rekey.from_payload({**valid, **bad["change"]})


def test_the_invite_token_layout() -> None:
    v = vectors("invite")
    book = InviteBook(bytes.fromhex(v["key"]), clock=lambda: float(v["now"]))
    claim = book.check(v["token"])
    assert (claim.room, claim.expires, claim.id, claim.issuer) == (
        v["room"],
        v["expires"],
        v["id"],
        v["issuer"],
    )
    payload, mac = v["token"].removeprefix(vectors("constants")["invite_prefix"]).split(".")
    flip = {"A": "B"}.get(mac[0], "A")  # the first character: all six of its bits are data
    for altered in (f"inv1.{payload}.{flip}{mac[1:]}", f"inv1.{flip}{payload[1:]}.{mac}"):
        with pytest.raises(AuthRefused):
            book.check(altered)
    with pytest.raises(AuthRefused, match="expired"):
        InviteBook(bytes.fromhex(v["key"]), clock=lambda: float(v["expires"])).check(v["token"])


def test_the_protocol_documents_vectors_are_the_files() -> None:
    """Every digest, key and code that docs/protocol.md prints in a "Vector:"
    paragraph is in docs/vectors.json, so the prose cannot drift from the file."""
    text = (VECTORS_FILE.parent / "protocol.md").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.startswith("Vector")]
    printed = {
        value
        for p in paragraphs
        for value in re.findall(r"`([0-9a-f]{32,}|[A-Za-z0-9+/]{40,}=*|\d{3} \d{3})`", p)
    }
    assert len(paragraphs) >= 4, paragraphs
    assert len(printed) >= 10, printed
    in_file = VECTORS_FILE.read_text(encoding="utf-8")
    assert {value for value in printed if f'"{value}"' not in in_file} == set()
