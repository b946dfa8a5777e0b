"""Relays cannot speak for anyone: a peer that advertises ``relay`` cannot
forge another peer's frames, and what a relay (peer or signaling server)
carries is sealed end to end: unreadable, and rejected when altered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from p2p_nb import protocol
from p2p_nb.app import P2PApp
from p2p_nb.errors import RelayAuthError
from p2p_nb.links import MeshSettings, ReconnectPolicy
from p2p_nb.relaykey import KeyPair, RelaySeal

from .conftest import MakePeer, RunningServer
from .test_mesh import wait_mesh
from .test_transfer import make_file, sha

pytestmark = pytest.mark.anyio


async def state_of(app: P2PApp, peer: P2PApp, want: str, timeout: float = 20) -> None:
    stream = app.events("peer_state")
    try:
        async with asyncio.timeout(timeout):
            while app.connection_status(peer.peer_id or "").state != want:
                await stream.get()
    finally:
        stream.close()


async def test_a_relay_peer_cannot_speak_for_another_peer(make_peer: MakePeer) -> None:
    """ben takes one link only (to rey, who offers ``relay``); his link to ana
    stays ``limited``, with no channel. rey forges ana's chat and a relay-open
    "from ana": ben takes neither (no relay session was agreed in signaling)."""
    ben = await make_peer("ben", capabilities_max=1)
    rey = await make_peer("rey", capabilities={"services": ["messaging", "relay"]})
    await wait_mesh([ben, rey])
    ana = await make_peer("ana")
    await state_of(ben, ana, "limited")
    inbox = ben.events("message")
    states = ben.events("peer_state")
    forged = protocol.ChatMessage(text="ana: send me your token", seq=1, ts=0.0)
    to_ben = rey._mesh.link(ben.peer_id or "")  # type: ignore[union-attr]
    for frame in (forged.encode(), protocol.RelayOpen().encode()):
        to_ben.out.transmit(protocol.RelayFrame(data=frame, sender=ana.peer_id).encode())
    await rey.send_message("after the forgeries")  # same ordered channel: they came first
    got = await inbox.get(timeout=10)
    assert (got.peer_id, got.data.text) == (rey.peer_id, "after the forgeries")
    assert inbox.drain() == []
    assert all(m.text != forged.text for m in ben.messages)
    assert ben.connection_status(ana.peer_id or "").state == "limited"
    assert [e for e in states.drain() if e.peer_id == ana.peer_id] == []


class RelayTap:
    """The signaling server's relay, watched: every frame it carries is kept,
    and ``tamper`` flips a byte in that many of the next frames longer than
    ``LONG`` (pings and reports are shorter)."""

    LONG = 400

    def __init__(self, server: RunningServer) -> None:
        self.namespace = server.service.sio.namespace_handlers["/"]
        self.emit = self.namespace.emit
        self.namespace.emit = self.intercept
        self.carried: list[bytes] = []
        self.tamper = 0

    async def intercept(self, event: str, data: Any = None, **kw: Any) -> None:
        if event == "relay":
            frame = data["data"]
            self.carried.append(frame if isinstance(frame, bytes) else frame.encode())
            if self.tamper and isinstance(frame, bytes) and len(frame) > self.LONG:
                self.tamper -= 1
                data = {**data, "data": frame[:-1] + bytes([frame[-1] ^ 1])}
        await self.emit(event, data, **kw)

    def close(self) -> None:
        self.namespace.emit = self.emit


async def relayed_pair(
    make_peer: MakePeer, tmp_path: Path, secret: str | None = None
) -> tuple[P2PApp, P2PApp]:
    """Two peers whose link moved to the signaling server's relay (the offerer
    asks for it, as it does after failed direct attempts)."""
    slow = MeshSettings(reconnect=ReconnectPolicy(base_delay=3600.0, max_delay=3600.0))
    a = await make_peer("ana", download_dir=tmp_path / "a", mesh_settings=slow, secret=secret)
    b = await make_peer("ben", download_dir=tmp_path / "b", mesh_settings=slow, secret=secret)
    await wait_mesh([a, b])
    offerer, answerer = (a, b) if (a.peer_id or "") < (b.peer_id or "") else (b, a)
    link = offerer._mesh.link(answerer.peer_id or "")  # type: ignore[union-attr]
    await link.cut()
    await state_of(offerer, answerer, "reconnecting")
    link.signals.put_nowait({"type": "_relay"})
    await state_of(offerer, answerer, "relayed")
    await state_of(answerer, offerer, "relayed")
    return a, b


@pytest.mark.parametrize("secret", [None, "a room secret for the relay"])
async def test_what_the_signaling_relay_carries_is_sealed(
    signal_server: RunningServer, make_peer: MakePeer, tmp_path: Path, secret: str | None
) -> None:
    tap = RelayTap(signal_server)
    try:
        a, b = await relayed_pair(make_peer, tmp_path, secret)
        inbox = b.events("message")
        secret = "the quarterly numbers are 4711"
        await a.send_message(secret)
        assert (await inbox.get(timeout=10)).data.text == secret
        src = tmp_path / "known.bin"
        digest = make_file(src, 300_000)
        offers = b.events("file_offer", "file_received")
        await a.share_file(src)
        await (await offers.wait_for("file_offer", timeout=10)).data.accept()
        got = await offers.wait_for("file_received", timeout=60)
        assert sha(got.data.path) == digest
        carried = b"".join(tap.carried)
        assert len(tap.carried) > 5
        assert secret.encode() not in carried
        assert src.read_bytes()[1000:1064] not in carried
        assert b'"type"' not in carried  # not even the envelopes
    finally:
        tap.close()


async def test_a_tampered_relayed_frame_is_rejected_and_reported(
    signal_server: RunningServer, make_peer: MakePeer, tmp_path: Path
) -> None:
    tap = RelayTap(signal_server)
    try:
        a, b = await relayed_pair(make_peer, tmp_path)
        inbox, errors = b.events("message"), b.events("error")
        tap.tamper = 1
        altered = "altered on the way " + "x" * RelayTap.LONG
        await a.send_message(altered)
        error = await errors.get(timeout=10)
        assert isinstance(error.data, RelayAuthError)
        assert error.peer_id == a.peer_id
        await a.send_message("the next one")
        assert (await inbox.get(timeout=10)).data.text == "the next one"
        assert all(m.text != altered for m in b.messages)
        assert b.connection_status(a.peer_id or "").state == "relayed"
    finally:
        tap.close()


def sealed_pair(via: str | None = "r") -> tuple[RelaySeal, RelaySeal]:
    ka, kb = KeyPair(), KeyPair()
    a = RelaySeal.agree(ka, kb.public_b64, session="s" * 32, local_id="a", peer_id="b", via=via)
    b = RelaySeal.agree(kb, ka.public_b64, session="s" * 32, local_id="b", peer_id="a", via=via)
    return a, b


def test_sealed_frames_open_once_in_order_and_only_unaltered() -> None:
    a, b = sealed_pair()
    first, second, third = a.seal("hello"), a.seal(b"\x01chunk"), a.seal("third")
    assert b.open(first) == "hello"
    assert b.open(second) == b"\x01chunk"
    with pytest.raises(RelayAuthError, match="replayed or reordered"):
        b.open(second)
    with pytest.raises(RelayAuthError, match="failed authentication"):
        b.open(third[:-1] + bytes([third[-1] ^ 0x80]))
    assert b.open(third) == "third"
    with pytest.raises(RelayAuthError, match="failed authentication"):
        a.open(a.seal("my own frame, reflected"))  # the other direction has its own key
    with pytest.raises(RelayAuthError, match="not sealed"):
        b.open("plain text")
    _, other_route = sealed_pair(via=None)
    with pytest.raises(RelayAuthError, match="failed authentication"):
        other_route.open(a.seal("through another relay"))


def test_a_bad_public_key_is_a_relay_auth_error() -> None:
    with pytest.raises(RelayAuthError):
        KeyPair().shared("not base64!")
    with pytest.raises(RelayAuthError):
        KeyPair().shared("AAAA")
