"""The data-channel wire format: round trips and every kind of bad input."""

from __future__ import annotations

import json

import pytest

from p2p_nb import ProtocolError
from p2p_nb.protocol import ChatMessage, Ping, Pong, UnknownMessage, decode


def test_chat_round_trip() -> None:
    msg = ChatMessage(text="héllo 👋", seq=3, ts=1.5, to="abc")
    back = decode(msg.encode())
    assert isinstance(back, ChatMessage)
    assert (back.text, back.seq, back.ts, back.id, back.to) == (msg.text, 3, 1.5, msg.id, "abc")


def test_ping_pong_round_trip() -> None:
    assert decode(Ping(id="p1", ts=2.0).encode()) == Ping(id="p1", ts=2.0)
    assert decode(Pong(id="p1", ts=2.0).encode()) == Pong(id="p1", ts=2.0)


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
        ("[" * 100_000, "exceeds|JSON"),
        ("x" * 70_000, "exceeds"),
    ],
)
def test_bad_messages_raise_protocol_error(raw: str | bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(raw)
