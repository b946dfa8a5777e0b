"""Shared fixtures: real servers and real peers on loopback, nothing mocked."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from p2p_nb.app import P2PApp
from p2p_nb.server import ServerLimits, SignalingService, create_app
from p2p_nb.turn import TurnServer

pytest_plugins = ["tests.jupyter_server", "tests.browser"]

TOKEN = "test-token-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RunningServer:
    url: str
    token: str
    service: SignalingService
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_server(
    token: str = TOKEN,
    limits: ServerLimits | None = None,
    port: int = 0,
    turn: TurnServer | None = None,
    public_url: str | None = None,
    **options: Any,
) -> RunningServer:
    """A standalone signaling server on loopback; ``options`` go to ``create_app``."""
    app, service = create_app(token, limits=limits, turn=turn, public_url=public_url, **options)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return RunningServer(f"http://127.0.0.1:{port}/", token, service, runner)


@pytest.fixture
async def signal_server() -> AsyncIterator[RunningServer]:
    server = await start_server()
    yield server
    await server.stop()


MakePeer = Callable[..., Awaitable[P2PApp]]


@asynccontextmanager
async def joined(server: RunningServer, *names: str) -> AsyncIterator[list[P2PApp]]:
    """One app per name, joined to ``room1`` of ``server`` (disconnected after)."""
    apps: list[P2PApp] = []
    try:
        for name in names:
            app = await P2PApp.connect(server.url, server.token, thread=False)
            apps.append(app)
            await app.join_room("room1", name=name)
        yield apps
    finally:
        for app in apps:
            await app.disconnect()


@pytest.fixture
async def make_peer(signal_server: RunningServer) -> AsyncIterator[MakePeer]:
    """Factory of joined peers on the test's own loop; all disconnected at teardown."""
    apps: list[P2PApp] = []

    async def make(
        name: str,
        room: str = "room1",
        *,
        thread: bool = False,
        capabilities: dict[str, Any] | None = None,
        capabilities_max: int | None = None,
        secret: str | None = None,
        **kw: Any,
    ) -> P2PApp:
        app = await P2PApp.connect(signal_server.url, signal_server.token, thread=thread, **kw)
        apps.append(app)
        if capabilities_max is not None:
            capabilities = {**(capabilities or {}), "max_connections": capabilities_max}
        await app.join_room(room, name=name, capabilities=capabilities, secret=secret)
        return app

    yield make
    for app in apps:
        await app.disconnect()


@dataclass
class ServerProcess:
    url: str
    token: str
    process: asyncio.subprocess.Process
    banner: list[str]


async def spawn_signal_server(*args: str, token: str | None = TOKEN) -> ServerProcess:
    """Run ``p2p-nb-signal`` as users do, in its own process; return once it listens."""
    argv = [sys.executable, "-m", "p2p_nb.server", "--host", "127.0.0.1", "--port", "0", *args]
    if token is not None:
        argv += ["--token", token]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    banner: list[str] = []
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"p2p-nb-signal exited early: {banner}")
            banner.append(line.rstrip())
            if "connect with" in line or "--no-token" in args:
                break
    url = banner[0].rsplit(" ", 1)[1]
    found = token
    for line in banner:
        if "token=" in line and "P2PApp" in line:
            found = line.split("token=", 1)[1].strip("')\"")
    return ServerProcess(url, found or "", proc, banner)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def server_process() -> AsyncIterator[ServerProcess]:
    server = await spawn_signal_server()
    yield server
    await stop_process(server.process)


@asynccontextmanager
async def peer_process(
    url: str, token: str, room: str, name: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A peer in its own OS process (tests/peer_process.py), joined; killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peer_process",
        url,
        token,
        room,
        name,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert line[:1] == ["READY"], line
        yield proc, line[1]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
