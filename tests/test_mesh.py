"""Full mesh over the standalone signaling server, with real aiortc peers."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict

import pytest

from p2p_nb import PeerUnavailable, ProtocolError, SignalingError, protocol
from p2p_nb.app import P2PApp
from p2p_nb.links import MeshSettings

from .conftest import MakePeer, RunningServer, ServerProcess, peer_process

pytestmark = pytest.mark.anyio


async def wait_mesh(apps: list[P2PApp], timeout: float = 30.0) -> None:
    """Until every app has an open channel to every other."""
    want = len(apps) - 1
    streams = [app.events("peer_connected") for app in apps]
    try:
        async with asyncio.timeout(timeout):
            for app, stream in zip(apps, streams, strict=True):
                while len(app.connected_peers()) < want:
                    await stream.get()
    finally:
        for s in streams:
            s.close()


async def test_two_peers_chat_and_status(make_peer: MakePeer) -> None:
    a = await make_peer("ana")
    b = await make_peer("ben")
    await wait_mesh([a, b])
    assert a.connected_peers() == [b.peer_id]
    status = a.connection_status(b.peer_id)
    assert status.state == "connected"
    assert status.name == "ben"
    assert status.initiator == (a.peer_id < b.peer_id)  # type: ignore[operator]
    assert b.peers[a.peer_id].name == "ana"  # type: ignore[index]

    inbox = b.events("message")
    sent = await a.send_message("hi")
    ev = await inbox.get(timeout=10)
    assert ev.data.text == "hi"
    assert ev.data.sender == a.peer_id
    assert ev.data.sender_name == "ana"
    assert ev.data.seq == sent.seq
    assert list(b.messages)[-1].text == "hi"


async def test_state_sequence_of_a_link(make_peer: MakePeer) -> None:
    a = await make_peer("ana")
    states = a.events("peer_state")
    b = await make_peer("ben")
    await wait_mesh([a, b])
    seen = []
    while not seen or seen[-1] != "connected":
        ev = await states.get(timeout=10)
        assert ev.peer_id == b.peer_id
        seen.append(ev.data["new"])
    assert seen == ["connecting", "connected"]


@pytest.mark.parametrize("n", [2, 6])
async def test_every_message_arrives_once_in_order(make_peer: MakePeer, n: int) -> None:
    apps = [await make_peer(f"p{i}") for i in range(n)]
    await wait_mesh(apps)
    per_sender = 30
    streams = [app.events("message") for app in apps]

    async def blast(app: P2PApp) -> None:
        for i in range(per_sender):
            await app.send_message(f"{app.name}:{i}")

    await asyncio.gather(*(blast(app) for app in apps))
    for app, stream in zip(apps, streams, strict=True):
        got: dict[str, list[int]] = defaultdict(list)
        texts: dict[str, list[str]] = defaultdict(list)
        for _ in range(per_sender * (n - 1)):
            ev = await stream.get(timeout=20)
            got[ev.peer_id].append(ev.data.seq)
            texts[ev.peer_id].append(ev.data.text)
        assert set(got) == {o.peer_id for o in apps if o is not app}
        for other in apps:
            if other is app:
                continue
            assert texts[other.peer_id] == [f"{other.name}:{i}" for i in range(per_sender)]
            assert got[other.peer_id] == sorted(set(got[other.peer_id]))


async def test_simultaneous_joins_form_a_full_mesh(make_peer: MakePeer) -> None:
    """Events that arrive while our own join is in flight are not lost."""
    for attempt in range(3):
        apps = await asyncio.gather(*(make_peer(f"p{i}", f"race{attempt}") for i in range(8)))
        await wait_mesh(list(apps))
        for app in apps:
            assert len(app.peers) == 7


async def test_direct_message_reaches_only_its_target(make_peer: MakePeer) -> None:
    a, b, c = [await make_peer(x) for x in ("a", "b", "c")]
    await wait_mesh([a, b, c])
    in_b, in_c = b.events("message"), c.events("message")
    await a.send_message("for b only", to=b.peer_id)
    await a.send_message("for all")
    assert (await in_b.get(timeout=10)).data.text == "for b only"
    assert (await in_b.get(timeout=10)).data.text == "for all"
    # c's first message is the broadcast: the direct one never reached it
    first_c = await in_c.get(timeout=10)
    assert first_c.data.text == "for all"
    with pytest.raises(PeerUnavailable):
        await a.send_message("x", to="nobody")


async def test_late_joiner_connects_to_everyone(make_peer: MakePeer) -> None:
    early = [await make_peer(f"e{i}") for i in range(3)]
    await wait_mesh(early)
    late = await make_peer("late")
    await wait_mesh([*early, late])
    assert sorted(late.connected_peers()) == sorted(a.peer_id for a in early)  # type: ignore[misc]
    inbox = late.events("message")
    await early[0].send_message("welcome")
    assert (await inbox.get(timeout=10)).data.text == "welcome"


async def test_clean_leave_disappears_and_rest_keeps_working(make_peer: MakePeer) -> None:
    a, b, c = [await make_peer(x) for x in ("a", "b", "c")]
    await wait_mesh([a, b, c])
    left_a, left_b = a.events("peer_left"), b.events("peer_left")
    gone = c.peer_id
    await c.disconnect()
    for stream in (left_a, left_b):
        ev = await stream.get(timeout=10)
        assert ev.peer_id == gone
        assert ev.data["reason"] == "left"
    assert gone not in a.peers
    assert gone not in b.connected_peers()
    inbox = b.events("message")
    await a.send_message("still here")
    assert (await inbox.get(timeout=10)).data.text == "still here"


async def test_killed_process_disappears(signal_server: RunningServer, make_peer: MakePeer) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    connected = a.events("peer_connected")
    async with peer_process(signal_server.url, signal_server.token, "room1", "victim") as (
        proc,
        victim,
    ):
        await connected.wait_for("peer_connected", lambda e: e.peer_id == victim, timeout=30)
        # the process really is in the mesh: it answers over the data channel
        inbox = a.events("message")
        await a.send_message("ping", to=victim)
        pong = await inbox.wait_for("message", lambda e: e.peer_id == victim, timeout=10)
        assert pong.data.text == "pong"
        left = [a.events("peer_left"), b.events("peer_left")]
        proc.send_signal(signal.SIGKILL)
        for stream in left:
            ev = await stream.wait_for("peer_left", timeout=20)
            assert ev.peer_id == victim
        assert victim not in a.peers
        assert victim not in b.peers
    inbox_b = b.events("message")
    await a.send_message("after")
    assert (await inbox_b.get(timeout=10)).data.text == "after"


async def test_disconnect_leaves_nothing_running(server_process: ServerProcess) -> None:
    """The server runs in its own process here, so every task on this loop is a peer's."""
    before = asyncio.all_tasks()
    apps = []
    for name in ("a", "b"):
        app = await P2PApp.connect(server_process.url, server_process.token, thread=False)
        await app.join_room("room1", name=name)
        apps.append(app)
    await wait_mesh(apps)
    pcs = [link.pc for app in apps for link in app._mesh.links.values()]  # type: ignore[union-attr]
    assert len(pcs) == 2
    for app in apps:
        await app.disconnect()
    assert all(pc.connectionState == "closed" for pc in pcs)
    leftover = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
    still = [t for t in leftover if not t.done()]
    assert still == [], [repr(t.get_coro()) for t in still]
    with pytest.raises(SignalingError):
        await apps[0].send_message("after close")


async def test_threaded_app_from_the_test_loop(make_peer: MakePeer) -> None:
    """The kernel mode: network on its own thread, API awaited from another loop."""
    a = await make_peer("a", thread=True)
    b = await make_peer("b")
    await wait_mesh([a, b])
    inbox_a = a.events("message")
    inbox_b = b.events("message")
    await a.send_message("from thread")
    await b.send_message("to thread")
    assert (await inbox_b.get(timeout=10)).data.text == "from thread"
    assert (await inbox_a.get(timeout=10)).data.text == "to thread"
    thread = a._net
    await a.disconnect()
    assert thread is not None
    assert thread.loop.is_closed()


async def test_a_burst_travels_in_few_frames_and_keeps_its_order(make_peer: MakePeer) -> None:
    """Messages sent in one loop turn share data-channel messages (batches);
    one too big for a batch travels alone, between the batches, in order."""
    quiet = MeshSettings(ping_interval=3600.0)  # no ping or pong among the counted frames
    a = await make_peer("a", mesh_settings=quiet)
    b = await make_peer("b", mesh_settings=quiet)
    await wait_mesh([a, b])
    link = a._mesh.links[b.peer_id or ""]  # type: ignore[union-attr]
    inbox = b.events("message")
    texts = [f"burst {i}" for i in range(300)]
    texts[150] = "L" * 15_900  # its envelope is over BATCH_MAX_CHARS
    frames, sent = link.out.frames_sent, link.out.messages_sent
    for text in texts:  # no await suspends here: all in one turn of the loop
        await a.send_message(text)
    got = [(await inbox.get(timeout=20)).data.text for _ in texts]
    assert got == texts
    # every batched message counts; the link's own mesh-report may join the burst
    assert len(texts) <= link.out.messages_sent - sent <= len(texts) + 1
    assert link.out.frames_sent - frames < 20


async def test_a_bad_part_of_a_batch_is_dropped_and_the_rest_delivered(
    make_peer: MakePeer,
) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    inbox, errors = b.events("message"), b.events("error")
    channel = a._mesh.links[b.peer_id or ""].channel  # type: ignore[union-attr]
    assert channel is not None

    def chat(text: str, seq: int) -> str:
        return protocol.ChatMessage(text=text, seq=seq, ts=time.time()).encode()

    channel.send("\n".join([chat("one", 1), '{"v": 1, "type": "chat"', "", chat("two", 2)]))
    assert [(await inbox.get(timeout=10)).data.text for _ in range(2)] == ["one", "two"]
    for _ in range(2):  # the truncated JSON and the empty part
        ev = await errors.get(timeout=10)
        assert ev.peer_id == a.peer_id
        assert isinstance(ev.data, ProtocolError)
    a._seq = 2  # the hand-made messages above took sequence numbers 1 and 2
    await a.send_message("still connected")
    assert (await inbox.get(timeout=10)).data.text == "still connected"
    assert b.connection_status(a.peer_id or "").state == "connected"
