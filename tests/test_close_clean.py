"""Closing leaves nothing behind (issue 17, item 14).

A script run in a fresh interpreter, as a user runs one, with warnings as
errors and asyncio's debug mode on: it connects two apps (one on its own
network thread, one on the script's loop), joins, chats, cuts a link so
that reconnect work is under way, loses the signaling server so that its
reconnect loop runs, and closes both with ``await app.close()``. Anything a
close forgot (a pending task, an aiohttp session, a socket) shows on stderr
when the interpreter ends.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import TOKEN, spawn_signal_server, stop_process

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, signal, sys
    from p2p_nb.app import P2PApp

    async def main(url, token, server_pid):
        a = await P2PApp.connect(url, token, thread=True)
        b = await P2PApp.connect(url, token, thread=False)
        await a.join_room("room1", name="a")
        await b.join_room("room1", name="b")
        inbox = b.events("message")
        connected = a.events("peer_connected")
        if not a.connected_peers():
            await connected.get(timeout=20)
        await a.send_message("hello")
        assert (await inbox.get(timeout=20)).data.text == "hello"
        reconnecting = b.events("peer_reconnecting")
        await b._require_mesh().links[a.peer_id].cut()
        await reconnecting.get(timeout=20)
        lost = b.events("signaling_lost")
        os.kill(server_pid, signal.SIGKILL)
        await lost.get(timeout=20)
        await b.send_message("while reconnecting")
        await a.close()
        await b.close()
        print("closed", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    gc.collect()
    """
)

LEFT_BEHIND = (
    "Task was destroyed but it is pending",
    "Unclosed client session",
    "Unclosed connector",
    "unclosed",
    "ResourceWarning",
    "was never awaited",
    "Exception ignored",
    "Traceback",
)


async def test_close_ends_every_task_session_and_socket() -> None:
    server = await spawn_signal_server()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            "-c",
            SCRIPT,
            server.url,
            TOKEN,
            str(server.process.pid),
            cwd=ROOT,
            env={"PYTHONASYNCIODEBUG": "1", "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await stop_process(server.process)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert out.decode().strip() == "closed"
    found = [line for line in stderr.splitlines() if any(w in line for w in LEFT_BEHIND)]
    assert not found, stderr
