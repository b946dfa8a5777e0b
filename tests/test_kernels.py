"""Real kernels under a real Jupyter server: discovery, chat, and a blocking cell."""

from __future__ import annotations

import asyncio

import pytest

from p2p_nb import AuthError, SignalingError
from p2p_nb.app import P2PApp

from .jupyter_server import JupyterServer
from .kernels import Kernel, server_kernels

pytestmark = pytest.mark.anyio

JOIN = """
import asyncio, p2p_nb
app = await p2p_nb.P2PApp.connect()        # no URL, no token: discovered
inbox = app.events("message")
links = app.events("peer_connected")
print(await app.join_room({room!r}, name={name!r}))
"""

WAIT_PEERS = """
async with asyncio.timeout(30):
    while len(app.connected_peers()) < {n}:
        await links.get()
print(sorted(app.connected_peers()))
"""


async def join(kernel: Kernel, room: str, name: str) -> str:
    return (await kernel.run(JOIN.format(room=room, name=name))).strip()


async def test_two_kernels_discover_the_server_and_chat(jupyter_server: JupyterServer) -> None:
    async with server_kernels(jupyter_server, 2) as (ka, kb):
        id_a = await join(ka, "kernels", "ka")
        id_b = await join(kb, "kernels", "kb")
        assert id_a != id_b
        assert id_b in await ka.run(WAIT_PEERS.format(n=1))
        assert id_a in await kb.run(WAIT_PEERS.format(n=1))
        # the network thread: a kernel-side app runs the mesh off the kernel's loop
        assert (await ka.run("print(app._net is not None)")).strip() == "True"
        await ka.run('await app.send_message("hello from ka")')
        got = await kb.run(
            "e = await inbox.get(timeout=20)\nprint(e.peer_id, e.data.sender_name, e.data.text)"
        )
        assert got.strip() == f"{id_a} ka hello from ka"
        await kb.run(f'await app.send_message("only for ka", to={id_a!r})')
        got = await ka.run("e = await inbox.get(timeout=20)\nprint(e.data.text)")
        assert got.strip() == "only for ka"
        await ka.run("await app.disconnect()")
        await kb.run("await app.disconnect()")


async def test_blocking_cell_does_not_drop_the_kernel(jupyter_server: JupyterServer) -> None:
    """45 s of time.sleep: longer than aioice's consent timeout and Socket.IO's ping timeout."""
    peer = await P2PApp.connect(jupyter_server.url, jupyter_server.token, thread=False)
    try:
        connected = peer.events("peer_connected")
        await peer.join_room("blocking", name="watcher")
        async with server_kernels(jupyter_server, 1) as (kernel,):
            kid = await join(kernel, "blocking", "sleeper")
            await connected.wait_for("peer_connected", lambda e: e.peer_id == kid, timeout=30)
            changes = peer.events("peer_left", "peer_state")
            cell = kernel.run_later("import time\ntime.sleep(45)\nprint('woke')")
            await kernel.started(cell)
            await peer.send_message("early")
            # Let the cell block for longer than the timeouts that would drop a
            # starved peer (~30 s ICE consent, 25+20 s Socket.IO ping): the
            # passage of time is the subject of this test, not a synchronisation.
            await asyncio.sleep(40)
            await peer.send_message("late")
            reply = await kernel.client.get_shell_msg(timeout=30)
            assert reply["parent_header"]["msg_id"] == cell
            assert reply["content"]["status"] == "ok"
            # nobody saw the sleeper leave or its link change state
            assert changes.drain() == []
            assert peer.connection_status(kid).state == "connected"
            assert kid in peer.peers
            texts = await kernel.run(
                "print([(await inbox.get(timeout=10)).data.text for _ in range(2)])"
            )
            assert texts.strip() == "['early', 'late']"
            inbox = peer.events("message")
            await kernel.run('await app.send_message("back")')
            assert (await inbox.get(timeout=10)).data.text == "back"
            await kernel.run("await app.disconnect()")
    finally:
        await peer.disconnect()


async def test_app_reports_jupyter_auth_errors_clearly(jupyter_server: JupyterServer) -> None:
    with pytest.raises(AuthError, match="refused a wrong token"):
        await P2PApp.connect(jupyter_server.url, "not-the-token", thread=False)
    with pytest.raises(AuthError, match="refused no token"):
        await P2PApp.connect(jupyter_server.url, None, thread=False)
    with pytest.raises(SignalingError, match="HTTP 404"):
        await P2PApp.connect(jupyter_server.url + "elsewhere/", jupyter_server.token, thread=False)
