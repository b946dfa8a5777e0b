"""The app's own robustness on real peers: leaving settles acks, event streams
are released, calls after ``disconnect()`` fail precisely, and status reads
from another thread never see the mesh mid-change."""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p_nb import AppClosed, P2PError
from p2p_nb.app import P2PApp, run_blocking
from p2p_nb.events import Event

from .conftest import MakePeer, RunningServer
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------ leaving settles
async def test_leaving_right_after_a_reply_leaves_no_message_unconfirmed(
    make_peer: MakePeer,
) -> None:
    """b reads a's message, answers and leaves at once: b's chat-ack (still on
    its 50 ms timer) and a's ack of the answer must both arrive first, so
    neither side warns that a message "may not have arrived"."""
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    seen_a = a.events("undelivered", "peer_left", "message")
    seen_b = b.events("undelivered")
    inbox = b.events("message")
    await a.send_message("hello")
    assert (await inbox.get(timeout=10)).data.text == "hello"
    await b.send_message("hello back")
    await b.leave_room()
    assert [(e.name, e.data) for e in seen_b.drain()] == []  # b's own answer was confirmed
    names = []
    while "peer_left" not in names:
        names.append((await seen_a.get(timeout=10)).name)
    assert names == ["message", "peer_left"]  # no "undelivered" before b was gone
    assert seen_a.drain() == []


# -------------------------------------------------------------- event streams
async def test_event_streams_nobody_holds_are_released(make_peer: MakePeer) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    bus = b._bus
    # a dropped variable: nothing else may keep it (and its buffer) alive
    dropped = b.events()
    ref = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert ref() is None, "the bus keeps a dropped stream alive"
    before = bus.stream_count

    # the README idiom: a stream made for one event and never named
    waiting = b.events("message")
    await a.send_message("one")
    assert (await b.events("message").get(timeout=10)).data.text in ("one", "two")
    # a loop that breaks out of async for
    await a.send_message("two")
    async for event in b.events("message"):
        assert event.data.text in ("one", "two")
        break
    # closed ones, by hand or by async with
    b.events("message").close()
    async with b.events("message") as scoped:
        assert bus.stream_count == before + 2  # waiting and scoped
    assert scoped.closed

    for i in range(50):  # events flow: only the streams still held get them
        await a.send_message(f"more {i}")
    got = [(await waiting.get(timeout=10)).data.text for _ in range(52)]
    assert got[-1] == "more 49"
    assert bus.stream_count == before + 1
    assert scoped.drain() == []  # a closed stream buffers nothing
    waiting.close()
    assert bus.stream_count == before


# ------------------------------------------------------------ after disconnect
async def test_every_call_after_disconnect_raises_app_closed(make_peer: MakePeer) -> None:
    """A threaded app (the kernel mode): its loop is gone after disconnect();
    calls said RuntimeError('Event loop is closed') before."""
    a = await make_peer("a", thread=True)
    b = await make_peer("b")
    await wait_mesh([a, b])
    b_id = b.peer_id or ""
    await a.send_message("before")
    await a.disconnect()
    assert a._net is not None
    assert a._net.loop.is_closed()
    calls = {
        "send_message": lambda: a.send_message("after"),
        "send_custom": lambda: a.send_custom("vote", {"n": 1}),
        "join_room": lambda: a.join_room("room2"),
        "leave_room": a.leave_room,
        "share_file": lambda: a.share_file(__file__),
        "validate_mesh": a.validate_mesh,
        "update_capabilities": lambda: a.update_capabilities(role="worker"),
    }
    for what, call in calls.items():
        with pytest.raises(AppClosed, match="disconnected"):
            await call()
        assert what
    with pytest.raises(AppClosed):
        run_blocking(a, a.send_message("blocking"))
    for sync_call in (
        lambda: a.events("message"),
        lambda: a.on("message", print),
        lambda: a.register_handler("vote", print),
        lambda: a.connection_status(b_id),
        lambda: a.connection_quality(b_id),
        lambda: a.remote_capabilities(b_id),
        lambda: a.set_auto_accept(10),
    ):
        with pytest.raises(AppClosed):
            sync_call()
    # a P2PError (and a SignalingError, as before) with the code "closed"
    assert issubclass(AppClosed, P2PError)
    assert AppClosed().code == "closed"
    # what is over reads as over; history stays readable
    assert a.peers == {}
    assert a.connected_peers() == []
    assert a.all_connection_qualities() == {}
    assert a.offers == []
    assert a.incoming_transfers == []
    assert [m.text for m in a.messages] == ["before"]
    assert a.received == {}
    assert "disconnected" in repr(a)
    await a.disconnect()  # again: nothing to do, no error


async def test_disconnect_finishes_every_step_when_one_fails(
    make_peer: MakePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await make_peer("a", thread=True)
    b = await make_peer("b")
    await wait_mesh([a, b])
    left = b.events("peer_left")
    done = a.events("disconnected")
    assert a._mesh is not None
    assert a._transfers is not None
    assert a._signaling is not None
    pcs = [link.pc for link in a._mesh.links.values()]
    signaling = a._signaling
    a_id = a.peer_id

    async def broken() -> None:
        raise RuntimeError("transfers would not close")

    monkeypatch.setattr(a._transfers, "close", broken)
    with pytest.raises(RuntimeError, match="transfers would not close"):
        await a.disconnect()
    # everything after the failing step ran anyway
    assert all(pc is not None and pc.connectionState == "closed" for pc in pcs)
    assert not signaling.connected
    assert a._net is not None
    assert a._net.loop.is_closed()
    assert (await done.get(timeout=5)).name == "disconnected"
    assert (await left.get(timeout=10)).peer_id == a_id
    with pytest.raises(AppClosed):
        await a.send_message("after")


# -------------------------------------------------- reads from another thread
@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Threads switch every microsecond: a read that iterates a dict the
    other thread changes then fails almost surely instead of once in a while."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


async def test_status_reads_from_the_kernel_thread_while_links_churn(
    make_peer: MakePeer, signal_server: RunningServer, busy_switching: None
) -> None:
    """The kernel's thread reads while the network thread adds and removes
    links (peers joining and leaving): before the reads hopped to the network
    loop this raised "dictionary changed size during iteration" or KeyError."""
    a = await make_peer("a", thread=True)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def kernel_thread() -> None:
        while not stop.is_set():
            try:
                for _ in range(10):  # what iterates the links the most
                    a.connected_peers()
                for pid in a.peers:
                    with contextlib.suppress(P2PError):  # it left meanwhile: an answer
                        a.connection_status(pid)
                a.all_remote_capabilities()
                a.offers  # noqa: B018
                a.incoming_transfers  # noqa: B018
                if reads[0] % 20 == 0:
                    a.all_connection_qualities()
                reads[0] += 1
            except Exception as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=kernel_thread, name="kernel")
    reader.start()
    churn = [
        await P2PApp.connect(signal_server.url, signal_server.token, thread=False) for _ in range(4)
    ]
    joined_left = a.events("peer_joined", "peer_left")
    try:
        for round_ in range(10):
            for i, app in enumerate(churn):
                await app.join_room("room1", name=f"c{round_}-{i}")
            # leaving mid-handshake makes aiortc's own tasks fail noisily
            await wait_mesh([a, *churn])
            for app in churn:
                await app.leave_room()
            if errors:
                break
    finally:
        stop.set()
        reader.join(10)
        for app in churn:
            await app.disconnect()
    assert errors == []
    assert reads[0] > 0
    events: list[Event] = joined_left.drain()
    assert len([e for e in events if e.name == "peer_joined"]) >= 40, "no churn: proves nothing"


async def test_snapshot_runs_on_the_network_thread(make_peer: MakePeer) -> None:
    """The mechanism itself: a status read from another thread is evaluated on
    the network loop, so it is ordered with every change made there."""
    a = await make_peer("a", thread=True)
    assert a._net is not None
    where = a._snapshot(lambda: threading.current_thread().name)
    assert where == "p2p-nb-network"
    assert a._net.call(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):  # the network loop's exception, here
        a._net.call(lambda: 1 / 0)


async def test_incoming_transfers_is_a_copy_made_on_the_network_thread(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    """What the panel needs (every incoming transfer, not only open offers),
    without reaching into the transfer manager's dict from the kernel's thread."""
    a = await make_peer("a")
    b = await make_peer("b", thread=True)
    await wait_mesh([a, b])
    offers = b.events("file_offer")
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 1000)
    await a.share_file(src)
    offer = (await offers.get(timeout=10)).data
    got = b.incoming_transfers
    assert [(t.id, t.state) for t in got] == [(offer.id, "offered")]
    got.clear()  # a copy: the app's own record is untouched
    assert [t.id for t in b.incoming_transfers] == [offer.id]
    assert [t.id for t in b.offers] == [offer.id]
