"""The Socket.IO relay baseline: a tiny python-socketio server (aiohttp) that
forwards every frame to one other client, in order (``async_handlers=False``).

    python -m bench.sio_relay [HOST]   # prints "PORT <n>" once it listens on HOST
                                       # (default 127.0.0.1; bench.network: a peer's address)
"""

from __future__ import annotations

import asyncio
import sys

import socketio
from aiohttp import web


async def main(host: str = "127.0.0.1") -> None:
    sio = socketio.AsyncServer(
        async_mode="aiohttp", async_handlers=False, max_http_buffer_size=1 << 22
    )

    @sio.on("r")  # type: ignore[misc]
    async def relay(sid: str, to: str, data: str | bytes) -> None:
        await sio.emit("m", data, to=to)

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
