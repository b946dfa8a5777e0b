"""The signaling server against bad and hostile input, with raw Socket.IO clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from p2p_nb import AuthError, SignalingError
from p2p_nb.app import P2PApp
from p2p_nb.server import ServerLimits, create_app

from .conftest import TOKEN, RunningServer, spawn_signal_server, start_server, stop_process

pytestmark = pytest.mark.anyio

Raw = Callable[..., Awaitable[socketio.AsyncClient]]


@pytest.fixture
async def raw(signal_server: RunningServer) -> AsyncIterator[Raw]:
    clients: list[socketio.AsyncClient] = []

    async def connect(token: str | None = TOKEN, **kw: Any) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        headers = {"Authorization": f"token {token}"} if token else {}
        await sio.connect(
            signal_server.url,
            headers=headers,
            transports=["websocket"],
            socketio_path="p2p/socket.io",
            **kw,
        )
        clients.append(sio)
        return sio

    yield connect
    for sio in clients:
        await sio.disconnect()


async def test_health(signal_server: RunningServer, raw: Raw) -> None:
    sio = await raw()
    await sio.call("join", {"room": "r", "name": "x"})
    async with (
        aiohttp.ClientSession() as http,
        http.get(signal_server.url + "p2p/health") as resp,
    ):
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["rooms"] == 1
    assert body["peers"] == 1
    assert isinstance(body["version"], str)


async def test_join_reply_and_presence(raw: Raw) -> None:
    a, b = await raw(), await raw()
    joined: asyncio.Queue[Any] = asyncio.Queue()
    a.on("peer_joined", joined.put_nowait)
    ra = await a.call("join", {"room": "r", "name": "ana", "capabilities": {"role": "basic"}})
    assert ra["ok"]
    assert ra["peers"] == []
    assert len(ra["peer_id"]) == 16
    rb = await b.call("join", {"room": "r", "name": "ben"})
    assert rb["peers"] == [
        {"peer_id": ra["peer_id"], "name": "ana", "capabilities": {"role": "basic"}}
    ]
    ev = await asyncio.wait_for(joined.get(), 5)
    assert ev["peer_id"] == rb["peer_id"]
    assert ev["name"] == "ben"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("not an object", "invalid"),
        ({}, "invalid"),
        ({"room": 5}, "invalid"),
        ({"room": "../etc"}, "invalid_room"),
        ({"room": "a" * 65}, "too_large"),
        ({"room": "ok", "name": ["x"]}, "invalid"),
        ({"room": "ok", "name": "bad\x00name"}, "invalid_name"),
        ({"room": "ok", "capabilities": "x"}, "invalid"),
        ({"room": "ok", "capabilities": {"blob": "x" * 5000}}, "too_large"),
    ],
)
async def test_malformed_join_is_refused_clearly(raw: Raw, payload: Any, code: str) -> None:
    sio = await raw()
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("error", errors.put_nowait)
    reply = await sio.call("join", payload)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    assert (await asyncio.wait_for(errors.get(), 5))["code"] == code
    # the connection is still usable
    assert (await sio.call("join", {"room": "fine", "name": "n"}))["ok"]


async def test_signal_only_within_own_room(raw: Raw) -> None:
    a, b, c = await raw(), await raw(), await raw()
    got_b: asyncio.Queue[Any] = asyncio.Queue()
    got_c: asyncio.Queue[Any] = asyncio.Queue()
    b.on("signal", got_b.put_nowait)
    c.on("signal", got_c.put_nowait)
    ra = await a.call("join", {"room": "r1", "name": "a"})
    rb = await b.call("join", {"room": "r1", "name": "b"})
    rc = await c.call("join", {"room": "r2", "name": "c"})
    # to a peer of another room: refused as unknown, nothing delivered
    reply = await a.call("signal", {"to": rc["peer_id"], "type": "offer", "sdp": "v=0"})
    assert reply["error"]["code"] == "unknown_peer"
    reply = await a.call("signal", {"to": "nobody", "type": "offer", "sdp": "v=0"})
    assert reply["error"]["code"] == "unknown_peer"
    for bad, code in [
        ({"to": rb["peer_id"], "type": "bogus"}, "invalid"),
        ({"to": rb["peer_id"], "type": "offer"}, "invalid"),
        ({"to": rb["peer_id"], "type": "offer", "sdp": 7}, "invalid"),
        ({"to": 3, "type": "answer", "sdp": "x"}, "invalid"),
        ({"to": rb["peer_id"], "type": "candidate", "candidate": 5}, "invalid"),
    ]:
        reply = await a.call("signal", bad)
        assert reply["error"]["code"] == code, bad
    # a good one arrives, stamped with the true sender, and only at b
    ok = await a.call(
        "signal", {"to": rb["peer_id"], "type": "offer", "sdp": "v=0", "from": "forged"}
    )
    assert ok == {"ok": True}
    msg = await asyncio.wait_for(got_b.get(), 5)
    assert msg == {"from": ra["peer_id"], "type": "offer", "sdp": "v=0"}
    assert got_b.empty()
    assert got_c.empty()


async def test_signal_before_join_and_unknown_event(raw: Raw) -> None:
    sio = await raw()
    reply = await sio.call("signal", {"to": "x", "type": "offer", "sdp": "v=0"})
    assert reply["error"]["code"] == "not_joined"
    reply = await sio.call("make_coffee", {})
    assert reply["error"]["code"] == "unknown_event"
    reply = await sio.call("leave", {})
    assert reply["error"]["code"] == "not_joined"
    await sio.call("join", {"room": "r", "name": "a"})
    assert (await sio.call("join", {"room": "r2"}))["error"]["code"] == "already_joined"


async def test_oversized_payloads(signal_server: RunningServer, raw: Raw) -> None:
    a, b = await raw(), await raw()
    await a.call("join", {"room": "r", "name": "a"})
    rb = await b.call("join", {"room": "r", "name": "b"})
    # above the event limit: a clear error, connection kept
    big = "x" * (70 * 1024)
    reply = await a.call("signal", {"to": rb["peer_id"], "type": "offer", "sdp": big})
    assert reply["error"]["code"] == "too_large"
    # above the frame limit: the server closes that connection only
    closed = asyncio.Event()
    a.on("disconnect", lambda *args: closed.set())
    await a.emit("signal", {"to": rb["peer_id"], "type": "offer", "sdp": "y" * (2 * 1024 * 1024)})
    await asyncio.wait_for(closed.wait(), 10)
    # the server and the rest of the room are unaffected
    c = await raw()
    rc = await c.call("join", {"room": "r", "name": "c"})
    assert [p["peer_id"] for p in rc["peers"]] == [rb["peer_id"]]
    assert signal_server.service.health()["peers"] == 2


async def test_room_full_and_rate_limit() -> None:
    server = await start_server(limits=ServerLimits(max_peers_per_room=2, rate_burst=20))
    clients = []
    try:
        for _i in range(3):
            sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            await sio.connect(
                server.url,
                auth={"token": TOKEN},
                transports=["websocket"],
                socketio_path="p2p/socket.io",
            )
            clients.append(sio)
        assert (await clients[0].call("join", {"room": "r"}))["ok"]
        assert (await clients[1].call("join", {"room": "r"}))["ok"]
        full = await clients[2].call("join", {"room": "r"})
        assert full["error"]["code"] == "room_full"
        codes = [
            (await clients[2].call("signal", {"to": "x", "type": "offer", "sdp": "s"}))["error"][
                "code"
            ]
            for _ in range(40)
        ]
        assert "rate_limited" in codes
    finally:
        for sio in clients:
            await sio.disconnect()
        await server.stop()


async def test_wrong_or_missing_token_is_auth_error(signal_server: RunningServer) -> None:
    with pytest.raises(AuthError, match="refused"):
        await P2PApp.connect(signal_server.url, "wrong", thread=False)
    with pytest.raises(AuthError):
        await P2PApp.connect(signal_server.url, None, thread=False)
    with pytest.raises(SignalingError, match="cannot reach"):
        await P2PApp.connect("http://127.0.0.1:9/", "x", thread=False, timeout=3)
    app = await P2PApp.connect(signal_server.url + "?ignored=1", signal_server.token, thread=False)
    await app.disconnect()


async def test_token_in_query_string(signal_server: RunningServer) -> None:
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await sio.connect(
        signal_server.url + f"?token={TOKEN}",
        transports=["websocket"],
        socketio_path="p2p/socket.io",
    )
    assert (await sio.call("join", {"room": "q"}))["ok"]
    await sio.disconnect()


async def test_cli_generates_and_prints_a_token() -> None:
    server = await spawn_signal_server(token=None)
    try:
        assert server.token
        assert len(server.token) >= 32
        with pytest.raises(AuthError):
            await P2PApp.connect(server.url, None, thread=False)
        app = await P2PApp.connect(server.url, server.token, thread=False)
        assert await app.join_room("cli", name="a")
        await app.disconnect()
    finally:
        await stop_process(server.process)


async def test_cors_allowlist() -> None:
    app, _ = create_app(TOKEN, cors_allowed_origins=["http://good.example"])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        for origin, allowed in [("http://good.example", True), ("http://evil.example", False)]:
            sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            connect = sio.connect(
                url,
                headers={"Authorization": f"token {TOKEN}", "Origin": origin},
                transports=["websocket"],
                socketio_path="p2p/socket.io",
            )
            if allowed:
                await connect
                assert sio.connected
                await sio.disconnect()
            else:
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await connect
                await sio.eio.disconnect()
                if sio.eio.http is not None:
                    await sio.eio.http.close()
    finally:
        await runner.cleanup()


async def test_cli_no_relay() -> None:
    server = await spawn_signal_server("--no-relay")
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    try:
        await sio.connect(
            server.url,
            auth={"token": TOKEN},
            transports=["websocket"],
            socketio_path="p2p/socket.io",
        )
        joined = await sio.call("join", {"room": "r"})
        assert joined["relay"] is False
        reply = await sio.call("relay", {"to": joined["peer_id"], "data": "x"})
        assert reply["error"]["code"] == "relay_disabled"
    finally:
        await sio.disconnect()
        await stop_process(server.process)
