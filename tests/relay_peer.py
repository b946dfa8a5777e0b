"""A scriptable peer in its own process (and, in the relay test, its own
network namespace).

Usage: python -m tests.relay_peer URL TOKEN ROOM NAME DOWNLOAD_DIR [SERVICES [SETTINGS]]
(SERVICES: comma-separated, e.g. ``messaging,file_transfer,relay``, or empty;
SETTINGS: a JSON object of :class:`MeshSettings` fields that replace those of
:data:`SETTINGS`, e.g. ``{"pong_timeout": 2, "relay": false}``).
Prints ``READY <peer_id>``, then one line per event: ``STATE <peer> <state>
<transport>`` (on a relayed link followed by ``ROUTE <peer> <relaying peer id,
or "server">``, on a direct one by ``ICE <peer> <host|relay>``), ``MSG <peer>
<seq> <text>``, ``FILE <name> <sha256>``, ``PROGRESS <direction> <name>
<bytes> <total>``, and ``DROPPED <log message>`` when a link fails (the
reason, which peer_state does not carry). Reads commands on stdin: ``send
<text>``, ``share <path>``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import sys

from p2p_nb.app import P2PApp
from p2p_nb.errors import PeerUnavailable
from p2p_nb.mesh import MeshSettings, ReconnectPolicy

SETTINGS = MeshSettings(
    reconnect=ReconnectPolicy(max_attempts=20, base_delay=0.1, max_delay=1.0, attempt_timeout=3.0),
    ping_interval=1.0,
    pong_timeout=10.0,
    quality_interval=None,
    relay_after=1,
)


class Drops(logging.Handler):
    """``DROPPED <message>`` for p2p_nb.peerlink's "link ... dropped (why)"."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " dropped (" in message:
            print(f"DROPPED {message}", flush=True)


async def main(
    url: str,
    token: str,
    room: str,
    name: str,
    downloads: str,
    services: str = "",
    settings: str = "",
) -> None:
    mesh = dataclasses.replace(SETTINGS, **json.loads(settings)) if settings else SETTINGS
    links_log = logging.getLogger("p2p_nb.peerlink")
    links_log.setLevel(logging.INFO)
    links_log.addHandler(Drops())
    app = await P2PApp.connect(
        url,
        token,
        thread=False,
        download_dir=downloads,
        auto_accept_max_bytes=1 << 30,
        mesh_settings=mesh,
    )
    events = app.events(
        "peer_state", "message", "file_received", "file_progress", "transfer_failed", "error"
    )
    caps = {"services": services.split(",")} if services else None
    peer_id = await app.join_room(room, name=name, capabilities=caps)
    print(f"READY {peer_id}", flush=True)

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            verb, _, arg = line.rstrip("\n").partition(" ")
            if verb == "send":
                await app.send_message(arg)
            elif verb == "share":
                await app.share_file(arg)

    task = asyncio.create_task(commands())
    try:
        async for event in events:
            if event.name == "peer_state":
                try:
                    status = app.connection_status(event.peer_id or "")
                except PeerUnavailable:  # the peer left: its link is gone
                    print(f"STATE {event.peer_id} {event.data['new']} none", flush=True)
                    continue
                print(f"STATE {event.peer_id} {event.data['new']} {status.transport}", flush=True)
                if event.data["new"] == "relayed":
                    print(f"ROUTE {event.peer_id} {status.relay_via or 'server'}", flush=True)
                elif event.data["new"] == "connected":
                    print(f"ICE {event.peer_id} {status.ice_route}", flush=True)
            elif event.name == "message":
                print(f"MSG {event.peer_id} {event.data.seq} {event.data.text}", flush=True)
            elif event.name == "file_received":
                digest = hashlib.sha256(event.data.path.read_bytes()).hexdigest()
                print(f"FILE {event.data.name} {digest}", flush=True)
            elif event.name == "file_progress":
                p = event.data
                progress = f"{p['direction']} {p['name']} {p['bytes']} {p['total']}"
                print(f"PROGRESS {progress}", flush=True)
            else:
                print(f"EVENT {event.name} {event.data}", flush=True)
    finally:
        task.cancel()
        await app.disconnect()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
