"""Capabilities, max_connections and custom message types, between real peers."""

from __future__ import annotations

import asyncio

import pytest

from p2p_nb import PeerUnavailable, ProtocolError, protocol
from p2p_nb.app import CustomMessage
from p2p_nb.capabilities import Capabilities

from .conftest import MakePeer
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio


async def test_capabilities_reach_late_joiners_and_follow_updates(make_peer: MakePeer) -> None:
    gpu = Capabilities(
        role="super_peer",
        services=("messaging", "file_transfer", "relay", "gpu"),
        max_connections=8,
        bandwidth=10_000_000,
        storage=2**40,
        region="eu-west",
        timezone="Europe/Paris",
    )
    a = await make_peer("a")
    await a.leave_room()
    await a.join_room("room1", name="a", capabilities=gpu)
    b = await make_peer("b")
    await wait_mesh([a, b])
    assert a.local_capabilities == gpu
    assert a.provides_service("gpu")
    assert not b.provides_service("gpu")
    assert b.remote_capabilities(a.peer_id or "") == gpu  # from the join roster
    assert a.remote_capabilities(b.peer_id or "") == Capabilities()  # from peer_joined
    assert b.peers[a.peer_id or ""].capabilities["role"] == "super_peer"

    c = await make_peer("c")  # a late joiner
    await wait_mesh([a, b, c])
    assert c.all_remote_capabilities() == {a.peer_id: gpu, b.peer_id: Capabilities()}
    assert c.find_peers_with_service("gpu") == [a.peer_id]
    assert c.find_peers_with_service("relay") == [a.peer_id]
    assert sorted(c.find_peers_with_service("messaging")) == sorted([a.peer_id, b.peer_id])

    # an update reaches everyone present ...
    updates = [a.events("peer_updated"), c.events("peer_updated")]
    new = await b.update_capabilities(services=["messaging", "gpu"], region="us-east")
    assert new.rev == 1
    assert new.region == "us-east"
    for stream in updates:
        ev = await stream.wait_for("peer_updated", timeout=10)
        assert ev.peer_id == b.peer_id
        assert ev.data["capabilities"] == new
    # ... once, although it travels both over the data channel and through signaling
    with pytest.raises(TimeoutError):
        await updates[1].wait_for("peer_updated", timeout=0.5)
    assert sorted(c.find_peers_with_service("gpu")) == sorted([a.peer_id, b.peer_id])
    assert a.remote_capabilities(b.peer_id or "").region == "us-east"

    # ... and later joiners get the updated ones from the server's roster
    d = await make_peer("d")
    assert d.remote_capabilities(b.peer_id or "") == new
    assert d.remote_capabilities(b.peer_id or "").rev == 1


async def test_capabilities_are_validated(make_peer: MakePeer) -> None:
    with pytest.raises(ValueError, match="role"):
        Capabilities(role="king")
    with pytest.raises(ValueError, match="max_connections"):
        Capabilities(max_connections=-1)
    with pytest.raises(ValueError, match="repeat"):
        Capabilities(services=("a", "a"))
    for bad in (
        [],
        {"role": "basic", "services": "messaging"},
        {"resources": {"max_connections": "many"}},
        {"location": {"region": "x" * 500}},
        {"services": ["ok", 3]},
        {"rev": -1},
        {"role": "basic", "pad": "x" * 5000},
    ):
        with pytest.raises(ProtocolError):
            Capabilities.from_wire(bad)
    assert Capabilities.from_wire({}) == Capabilities()
    caps = Capabilities(services=("x",), region="r")
    assert Capabilities.from_wire(caps.to_wire()) == caps
    a = await make_peer("a")
    with pytest.raises(TypeError, match="unknown capability"):
        await a.update_capabilities(colour="red")
    with pytest.raises(ValueError, match="role"):
        await a.update_capabilities(role="king")
    assert a.local_capabilities == Capabilities()


async def test_max_connections_is_honoured(make_peer: MakePeer) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    states = [a.events("peer_state"), b.events("peer_state")]
    c = await make_peer("c", capabilities_max=1)
    limited = []
    for app, stream in zip((a, b), states, strict=True):
        ev = await stream.wait_for(
            "peer_state",
            lambda e: e.peer_id == c.peer_id and e.data["new"] in ("connected", "limited"),
            timeout=20,
        )
        if ev.data["new"] == "limited":
            limited.append(app)
    # exactly one of a and b got a link to c; the other is told why not
    assert len(limited) == 1
    (refused,) = limited
    linked = b if refused is a else a
    opened_c = c.events("peer_connected")
    while not c.connected_peers():
        await opened_c.get(timeout=20)
    assert c.connected_peers() == [linked.peer_id]
    assert c.connection_status(refused.peer_id or "").state == "limited"
    assert "max_connections" in (c.connection_status(refused.peer_id or "").limited_reason or "")
    status = refused.connection_status(c.peer_id or "")
    assert status.state == "limited"
    assert "max_connections" in (status.limited_reason or "")
    assert sorted(linked.connected_peers()) == sorted([refused.peer_id, c.peer_id])
    assert refused.connected_peers() == [linked.peer_id]
    # chat still works across the limit: a broadcast skips the limited link
    inbox = c.events("message")
    await refused.send_message("to everyone I can reach")
    with pytest.raises(PeerUnavailable, match="limited"):
        await refused.send_message("direct", to=c.peer_id)
    # the room view knows the pair is limited on purpose
    report = await a.validate_mesh()
    assert tuple(sorted([refused.peer_id or "", c.peer_id or ""])) in report.limited
    assert report.missing == []
    # raising the limit lets the refused link open
    opened = refused.events("peer_connected")
    await c.update_capabilities(max_connections=2)
    await opened.wait_for("peer_connected", lambda e: e.peer_id == c.peer_id, timeout=20)
    await refused.send_message("now direct", to=c.peer_id)
    ev = await inbox.wait_for("message", timeout=10)
    assert ev.data.text == "now direct"  # the broadcast never reached c


async def test_custom_message_types(make_peer: MakePeer) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    got: asyncio.Queue[CustomMessage] = asyncio.Queue()
    off = b.register_handler("vote", got.put_nowait)
    unknown = b.events("unknown_message", "custom_message")
    await a.send_custom("vote", {"choice": 3, "poll": "lunch"})
    msg = await asyncio.wait_for(got.get(), 10)
    assert msg == CustomMessage("vote", a.peer_id or "", {"choice": 3, "poll": "lunch"})
    ev = await unknown.get(timeout=10)
    assert ev.name == "custom_message"
    assert ev.peer_id == a.peer_id

    # an async handler works too
    done = asyncio.Event()

    async def on_tally(message: CustomMessage) -> None:
        await asyncio.sleep(0)
        done.set()

    b.register_handler("tally", on_tally)
    await a.send_custom("tally", {}, to=b.peer_id)
    await asyncio.wait_for(done.wait(), 10)
    await unknown.wait_for("custom_message", timeout=10)

    # without a handler: an unknown_message event, and the reader keeps going
    off()
    await a.send_custom("vote", {"choice": 4})
    ev = await unknown.get(timeout=10)
    assert ev.name == "unknown_message"
    assert ev.data.type == "vote"
    assert ev.data.payload["choice"] == 4
    inbox = b.events("message")
    await a.send_message("still fine")
    assert (await inbox.get(timeout=10)).data.text == "still fine"
    assert got.empty()

    with pytest.raises(ValueError, match="built-in"):
        b.register_handler("chat", got.put_nowait)
    with pytest.raises(ValueError, match="built-in"):
        await a.send_custom("ping", {})
    with pytest.raises(ValueError, match="built-in"):  # re-keying's own message
        b.register_handler("rekey", got.put_nowait)
    with pytest.raises(ValueError, match="built-in"):
        await a.send_custom("rekey", {})
    with pytest.raises(ValueError, match="envelope"):
        await a.send_custom("vote", {"type": "x"})
    with pytest.raises(ValueError, match="envelope"):
        await a.send_custom("vote", {"seq": 1})
    with pytest.raises(ValueError, match="bytes"):
        await a.send_custom("vote", {"blob": "x" * 70_000})


async def test_max_connections_zero_still_gets_updates(make_peer: MakePeer) -> None:
    """A peer with no links learns capabilities through the signaling server."""
    a = await make_peer("a", capabilities_max=0)
    b = await make_peer("b")
    limited = b.events("peer_state")
    await limited.wait_for(
        "peer_state", lambda e: e.peer_id == a.peer_id and e.data["new"] == "limited", timeout=20
    )
    assert a.connected_peers() == []
    assert b.connected_peers() == []
    updates = a.events("peer_updated")
    await b.update_capabilities(role="relay", services=["relay"])
    ev = await updates.wait_for("peer_updated", timeout=10)
    assert ev.data["capabilities"].role == "relay"
    assert a.find_peers_with_service("relay") == [b.peer_id]


def test_new_wire_messages_are_validated() -> None:
    caps = Capabilities(role="relay", services=("relay",), rev=3)
    msg = protocol.decode(protocol.CapabilitiesUpdate(caps).encode())
    assert msg == protocol.CapabilitiesUpdate(caps)
    report = protocol.MeshReport({"ab": "connected", "cd": "limited"}, request=True)
    assert protocol.decode(report.encode()) == report
    assert isinstance(protocol.decode(protocol.RelayOpen().encode()), protocol.RelayOpen)
    for bad in (
        '{"v":1,"type":"capabilities","caps":{"role":"king"}}',
        '{"v":1,"type":"capabilities"}',
        '{"v":1,"type":"mesh-report","links":{"a":"dancing"}}',
        '{"v":1,"type":"mesh-report","links":[]}',
        '{"v":1,"type":"mesh-report","links":{},"request":"yes"}',
    ):
        with pytest.raises(ProtocolError):
            protocol.decode(bad)
    custom = protocol.decode(protocol.encode_custom("vote", {"n": 1}))
    assert custom == protocol.UnknownMessage("vote", {"v": 1, "type": "vote", "n": 1})
