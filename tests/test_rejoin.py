"""Rejoining after the signaling connection was lost, on real servers: the
room as it is now (who left meanwhile), rejoins that fail and are tried
again, and a new identity that the old mesh never sees."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from p2p_nb.app import P2PApp
from p2p_nb.links import MeshSettings, ReconnectPolicy
from p2p_nb.mesh import Mesh
from p2p_nb.server import ServerLimits, create_app
from p2p_nb.signaling import ReconnectSettings

from .conftest import TOKEN, MakePeer, RunningServer, start_server
from .tcp_proxy import TcpProxy
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

FAST = ReconnectSettings(base_delay=0.05, max_delay=0.3)
"""Signaling reconnects (and rejoin retries) quickly in these tests."""
QUICK_LINKS = MeshSettings(reconnect=ReconnectPolicy(base_delay=0.1, max_delay=0.5))


async def proxied_peer(server: RunningServer, proxy: TcpProxy, name: str) -> P2PApp:
    """A peer whose signaling goes through ``proxy`` (so a test can cut it)."""
    app = await P2PApp.connect(proxy.url, server.token, thread=False, mesh_settings=QUICK_LINKS)
    assert app._signaling is not None
    app._signaling.reconnect_settings = FAST
    await app.join_room("room1", name=name)
    return app


@pytest.fixture
async def proxy(signal_server: RunningServer) -> AsyncIterator[TcpProxy]:
    port = int(signal_server.url.rstrip("/").rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    await proxy.start()
    yield proxy
    await proxy.cut()


async def test_a_peer_that_left_while_we_were_away_is_removed_when_we_rejoin(
    make_peer: MakePeer, signal_server: RunningServer, proxy: TcpProxy
) -> None:
    a = await make_peer("a")
    c = await make_peer("c")
    b = await proxied_peer(signal_server, proxy, "b")
    try:
        await wait_mesh([a, b, c])
        lost = b.events("signaling_lost")
        seen_b = b.events("peer_left", "signaling_restored")
        await proxy.cut()
        await lost.get(timeout=10)
        # c leaves while b cannot hear it: the server tells a (and not b)
        c_id = c.peer_id
        left_a = a.events("peer_left")
        await c.leave_room()
        assert (await left_a.get(timeout=10)).peer_id == c_id
        await proxy.start()
        restored = await seen_b.wait_for("signaling_restored", timeout=20)
        assert restored.data == {"resumed": True, "room": "room1"}
        ev = await seen_b.wait_for("peer_left", timeout=20)
        assert ev.peer_id == c_id
        assert ev.data["reason"] == "left"
        assert sorted(b.peers) == [a.peer_id]
        assert b._mesh is not None
        assert c_id not in b._mesh.links
        # and the room goes on: a and b still talk
        inbox = a.events("message")
        await b.send_message("still here")
        assert (await inbox.get(timeout=10)).data.text == "still here"
    finally:
        await b.disconnect()


class RejoinFailures(logging.Handler):
    """Counts the signaling client's failed rejoins as it logs them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.third = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("rejoin failed"):
            self.count += 1
            if self.count >= 3:
                self.third.set()


async def test_a_failed_rejoin_is_tried_again_until_it_works() -> None:
    """The room is full when b comes back (its place was given up at once):
    the rejoin is refused, reported, and tried again until a place is free."""
    server = await start_server(limits=ServerLimits(resume_grace=0.0, max_peers_per_room=2))
    proxy = TcpProxy(int(server.url.rstrip("/").rsplit(":", 1)[1]))
    await proxy.start()
    apps: list[P2PApp] = []
    failures = RejoinFailures()

    async def direct(name: str) -> P2PApp:
        app = await P2PApp.connect(server.url, server.token, thread=False)
        apps.append(app)
        await app.join_room("room1", name=name)
        return app

    try:
        a = await direct("a")
        b = await proxied_peer(server, proxy, "b")
        apps.append(b)
        await wait_mesh([a, b])
        b_id = b.peer_id
        lost = b.events("signaling_lost")
        gone = a.events("peer_left")
        await proxy.cut()
        await lost.get(timeout=10)
        assert (await gone.get(timeout=10)).peer_id == b_id  # no grace: b's place is gone
        c = await direct("c")  # and taken
        seen_b = b.events("error", "signaling_restored")
        logging.getLogger("p2p_nb.signaling").addHandler(failures)
        await proxy.start()
        failed = await seen_b.get(timeout=20)
        assert failed.name == "error", failed
        assert failed.data.code == "room_full"
        assert "trying again" in str(failed.data)
        assert b.room == "room1"
        await asyncio.wait_for(failures.third.wait(), 20)  # b keeps trying while it is full
        await c.leave_room()  # a place is free: the next attempt gets it
        # every retry meanwhile failed the same way: reported once, not each time
        restored = await seen_b.get(timeout=20)
        assert restored.name == "signaling_restored", restored
        assert restored.data == {"resumed": True, "room": "room1"}
        assert b.peer_id == b_id
        await wait_mesh([a, b])
        inbox = b.events("message")
        await a.send_message("welcome back")
        assert (await inbox.get(timeout=10)).data.text == "welcome back"
    finally:
        logging.getLogger("p2p_nb.signaling").removeHandler(failures)
        for app in apps:
            await app.disconnect()
        await proxy.cut()
        await server.stop()


async def serve(port: int, resume_key: bytes) -> web.AppRunner:
    """A signaling server on ``port`` (the same one again after a restart)."""
    app, _ = create_app(TOKEN, limits=ServerLimits(), resume_key=resume_key)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_a_new_identity_after_a_restart_never_reaches_the_old_mesh() -> None:
    """The server restarts with another resume key: every peer's resume is
    refused and it joins under a new id while its old mesh is still closing.
    What the server sends for the new ids must wait for the new mesh."""
    first = await start_server()
    port = int(first.url.rstrip("/").rsplit(":", 1)[1])
    await first.stop()
    runner = await serve(port, b"key one")
    url = f"http://127.0.0.1:{port}/"
    apps: list[P2PApp] = []
    restarted: web.AppRunner | None = None
    try:
        for name in ("a", "b", "c", "d"):
            app = await P2PApp.connect(url, TOKEN, thread=False)
            assert app._signaling is not None
            app._signaling.reconnect_settings = FAST
            await app.join_room("room1", name=name)
            apps.append(app)
        await wait_mesh(apps)
        old_ids = [app.peer_id for app in apps]
        old_meshes: list[Mesh] = [app._mesh for app in apps]  # type: ignore[misc]
        restored = [app.events("signaling_restored") for app in apps]
        lost = [app.events("signaling_lost") for app in apps]
        await runner.cleanup()
        for stream in lost:
            await stream.get(timeout=10)
        restarted = await serve(port, b"key two")
        for stream in restored:
            ev = await stream.wait_for("signaling_restored", timeout=30)
            assert ev.data == {"resumed": False, "room": "room1"}
        new_ids = [app.peer_id for app in apps]
        assert not set(new_ids) & set(old_ids)
        await wait_mesh(apps, timeout=12)  # less than a link's attempt_timeout: no retry needed
        for app, old in zip(apps, old_meshes, strict=True):
            assert old.links == {}, f"{app.name}'s old mesh got {sorted(old.links)}"
            assert sorted(app.peers) == sorted(i or "" for i in new_ids if i != app.peer_id)
    finally:
        for app in apps:
            await app.disconnect()
        if restarted is not None:
            await restarted.cleanup()
