"""A peer in its own OS process, as another user's kernel would be.

Usage: python -m tests.peer_process URL TOKEN ROOM NAME
Prints ``READY <peer_id>`` once joined, then ``MSG <sender> <text>`` for each
chat message; answers ``ping`` texts with ``pong`` to everyone, and
``share <path>`` texts by offering that file to the asker.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from p2p_nb.app import P2PApp


async def main(url: str, token: str, room: str, name: str) -> None:
    app = await P2PApp.connect(url, token, thread=False)
    stream = app.events("message")
    peer_id = await app.join_room(room, name=name)
    print(f"READY {peer_id}", flush=True)
    async for event in stream:
        print(f"MSG {event.peer_id} {event.data.text}", flush=True)
        if event.data.text == "ping":
            await app.send_message("pong")
        elif event.data.text == "rss":
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            await app.send_message(f"rss {rss}", to=event.peer_id)
        elif event.data.text.startswith("share "):
            await app.share_file(event.data.text[6:], to=event.peer_id)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
