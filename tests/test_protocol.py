"""The data-channel wire format: round trips and every kind of bad input."""

from __future__ import annotations

import json

import pytest

from p2p_nb import ProtocolError
from p2p_nb.protocol import (
    CHUNK_SIZE,
    MAX_CONTROL_BYTES,
    MAX_RELAY_FRAME_BYTES,
    ChatAck,
    ChatMessage,
    Ping,
    Pong,
    RelayFrame,
    UnknownMessage,
    decode,
    encode_chunk,
)


def test_chat_round_trip() -> None:
    msg = ChatMessage(text="héllo 👋", seq=3, ts=1.5, to="abc")
    back = decode(msg.encode())
    assert isinstance(back, ChatMessage)
    assert (back.text, back.seq, back.ts, back.id, back.to) == (msg.text, 3, 1.5, msg.id, "abc")


def test_ping_pong_round_trip() -> None:
    assert decode(Ping(id="p1", ts=2.0).encode()) == Ping(id="p1", ts=2.0)
    assert decode(Pong(id="p1", ts=2.0).encode()) == Pong(id="p1", ts=2.0)


def test_chat_ack_round_trip() -> None:
    assert decode(ChatAck(seq=41).encode()) == ChatAck(seq=41)


def test_unknown_type_is_not_an_error() -> None:
    msg = decode(json.dumps({"v": 1, "type": "vote", "choice": 2}))
    assert isinstance(msg, UnknownMessage)
    assert msg.type == "vote"
    assert msg.payload["choice"] == 2


def good(**over: object) -> str:
    base: dict[str, object] = {"v": 1, "type": "chat", "id": "i", "seq": 1, "ts": 0, "text": "t"}
    base.update(over)
    return json.dumps(base)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x01", "binary"),
        ("{not json", "JSON"),
        ("[1,2]", "object"),
        (json.dumps({"type": "chat"}), "version"),
        (good(v=2), "version"),
        (good(type=""), "type"),
        (good(type=5), "type"),
        (good(seq=-1), "seq"),
        (good(seq=True), "seq"),
        (good(seq="1"), "seq"),
        (good(ts="now"), "ts"),
        ('{"v":1,"type":"chat","id":"i","seq":1,"ts":NaN,"text":"t"}', "ts"),
        (good(text=None), "text"),
        (good(text="x" * 20_000), "longer"),
        (good(id=""), "empty"),
        (good(to=7), "to"),
        ('{"v":1,"type":"chat-ack"}', "seq"),
        ('{"v":1,"type":"chat-ack","seq":-3}', "seq"),
        ("[" * 100_000, "exceeds|JSON"),
        ("x" * 70_000, "exceeds"),
    ],
)
def test_bad_messages_raise_protocol_error(raw: str | bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(raw)


def test_relay_frame_round_trip_and_bounds() -> None:
    chunk = encode_chunk("ab" * 16, 0, b"\0\xff" * (CHUNK_SIZE // 2))
    worst = json.dumps({"v": 1, "type": "custom", "q": '"\\' * 16_000})  # every char escaped
    assert len(worst) <= MAX_CONTROL_BYTES
    for data, kw in ((chunk, {"to": "b"}), (worst, {"sender": "a"}), ("x", {"to": "b"})):
        wire = RelayFrame(data=data, **kw).encode()
        assert len(wire) <= MAX_RELAY_FRAME_BYTES
        assert decode(wire) == RelayFrame(data=data, **kw)
    base = {"v": 1, "type": "relay-frame", "data": "x", "binary": False}
    bad = [
        {**base},  # neither to nor from
        {**base, "to": "b", "from": "a"},  # both
        {**base, "to": ""},
        {**base, "to": "b" * 65},
        {**base, "to": "b", "binary": "yes"},
        {**base, "to": "b", "data": 3},
        {**base, "to": "b", "binary": True, "data": "not base64!"},
        {**base, "to": "b", "binary": True, "data": ""},
        {**base, "to": "b", "binary": True, "data": "AAAA" * 22_000},  # 66 000 bytes
        {**base, "to": "b", "data": "x" * (MAX_CONTROL_BYTES + 1)},
    ]
    for obj in bad:
        with pytest.raises(ProtocolError):
            decode(json.dumps(obj))
    # only a relay-frame may exceed MAX_CONTROL_BYTES
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(json.dumps({"v": 1, "type": "vote", "pad": "x" * MAX_CONTROL_BYTES}))
