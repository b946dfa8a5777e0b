"""Revoked means out: a revoked or expired invite ends its sessions, on the
standalone server and on a Jupyter server, and what the guest sends after is
never shown to members (issue 17, items 1-3).

The transport tests speak engine.io and Socket.IO by hand over one raw
WebSocket, as a client that ignores what the server tells it would: only
that shows whether the server itself closes the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from p2p_nb import AuthError, new_room_secret
from p2p_nb.app import P2PApp
from p2p_nb.invite import parse_invite

from .conftest import RunningServer, start_server
from .jupyter_server import JupyterServer
from .test_mesh import wait_mesh
from .test_web_client import Users, join, users, wait_connected

__all__ = ["users"]  # the browser users fixture, shared with the web client tests

pytestmark = pytest.mark.anyio
TIMEOUT = 20.0


@dataclass
class Where:
    """A signaling endpoint: the standalone server (in this process) or a Jupyter server."""

    url: str
    token: str
    service: Any = None
    """The standalone server's service (its clock can be moved), None for Jupyter."""


@pytest.fixture(params=["standalone", "jupyter"])
async def where(request: pytest.FixtureRequest) -> AsyncIterator[Where]:
    if request.param == "jupyter":
        server: JupyterServer = request.getfixturevalue("jupyter_server")
        yield Where(server.url, server.token)
        return
    running = await start_server()
    try:
        yield Where(running.url, running.token, running.service)
    finally:
        await running.stop()


class Clock:
    """The invite book's clock, moved by the test (UNIX seconds)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def set_clock(server: RunningServer) -> Clock:
    clock = Clock()
    server.service.invites._clock = clock
    return clock


class RawSocket:
    """One engine.io WebSocket, Socket.IO packets written by hand (protocol 5)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks = 0

    async def recv(self, timeout: float = TIMEOUT) -> str | None:
        """The next engine.io packet (pings answered), None once the transport is closed."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            return str(msg.data)

    async def until(self, wanted: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        while True:
            got = await self.recv(timeout)
            if got is None:
                raise AssertionError("the transport closed first")
            if wanted(got):
                return got

    async def connect(self) -> str:
        """A namespace CONNECT; the server's answer (``40{...}`` or ``44{...}``)."""
        await self.ws.send_str("40")
        return await self.until(lambda p: p.startswith(("40", "44")))

    async def call(self, event: str, data: dict[str, Any]) -> Any:
        self.acks += 1
        ack = str(self.acks)
        await self.ws.send_str(f"42{ack}" + json.dumps([event, data]))
        reply = await self.until(lambda p: p.startswith("43" + ack + "["))
        return json.loads(reply[2 + len(ack) :])[0]

    async def rest(self) -> list[str]:
        """Every packet until the server closes the transport."""
        seen = []
        while (got := await self.recv()) is not None:
            seen.append(got)
        return seen


@asynccontextmanager
async def raw_socket(base: str, token: str) -> AsyncIterator[RawSocket]:
    url = base.replace("http", "ws", 1) + "p2p/socket.io/?EIO=4&transport=websocket"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"token {token}"}) as ws,
    ):
        sock = RawSocket(ws)
        opened = await sock.recv()
        assert opened is not None
        assert opened.startswith("0{")
        yield sock


@asynccontextmanager
async def host(where: Where, room: str) -> AsyncIterator[P2PApp]:
    app = await P2PApp.connect(where.url, where.token, thread=False)
    try:
        await app.join_room(room, name="ana")
        yield app
    finally:
        await app.disconnect()


async def test_a_revoke_closes_the_guests_transport_not_just_its_namespace(
    where: Where,
) -> None:
    """After the revoke the guest's socket hears why, its namespace is
    disconnected and the server closes the engine.io transport: a namespace
    CONNECT sent on it anyway is never admitted (before, it was, on Jupyter:
    the guest then joined, signalled the host and used the relay)."""
    async with host(where, "rev1") as ana:
        link = await ana.create_invite(ttl=600)
        token = parse_invite(link).token
        async with raw_socket(where.url, token) as guest:
            assert (await guest.connect()).startswith("40{")
            joined = await guest.call("join", {"room": "rev1", "name": "eve"})
            assert joined["ok"] is True
            left = ana.events("peer_left")
            await ana.revoke_invite(link)
            ended = await guest.until(lambda p: p.startswith('42["session_ended"'))
            assert json.loads(ended[2:])[1]["reason"] == "revoked"
            assert "your invite was revoked" in json.loads(ended[2:])[1]["message"]
            await guest.until(lambda p: p == "41")
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                # a client that ignores all that: connect again, join again
                await guest.ws.send_str("40")
                await guest.ws.send_str("421" + json.dumps(["join", {"room": "rev1"}]))
            rest = await guest.rest()
            assert not any(p.startswith(("40{", "43")) for p in rest), rest
            assert guest.ws.closed
            gone = await left.get(timeout=TIMEOUT)
            assert (gone.data["reason"], gone.data["name"]) == ("revoked", "eve")
            assert ana.peers == {}


async def test_every_namespace_connect_checks_the_invite_again(where: Where) -> None:
    """A guest that left its namespace itself (so the revoke finds no session
    to close) and connects again on the same transport is refused: the
    credential is checked on every CONNECT, not taken from the upgrade."""
    async with host(where, "rev2") as ana:
        link = await ana.create_invite(ttl=600)
        async with raw_socket(where.url, parse_invite(link).token) as guest:
            assert (await guest.connect()).startswith("40{")
            await guest.ws.send_str("41")
            # a round trip on the same socket: the server has handled the "41"
            await guest.ws.send_str("40/elsewhere,")
            await guest.until(lambda p: p.startswith("44/elsewhere,"))
            await ana.revoke_invite(link)
            answer = await guest.connect()
            assert answer.startswith("44"), answer
            assert "revoked" in json.loads(answer[2:])["message"]


async def test_the_revoked_guest_is_told_and_nothing_it_sends_after_reaches_the_room(
    signal_server: RunningServer,
) -> None:
    """The guest's app gets an AuthError saying its invite was revoked and
    stops (no reconnect loop); the host drops it at once (``peer_left``,
    reason ``revoked``), and a message the guest sends after the revoke, over
    the link that is still closing, never shows up in the host's messages."""
    async with host(Where(signal_server.url, signal_server.token), "rev3") as ana:
        link = await ana.create_invite(ttl=600)
        ben = await P2PApp.connect(invite=link, thread=False)
        try:
            await ben.join_room(name="ben")
            await wait_mesh([ana, ben])
            inbox = ana.events("message")
            await ben.send_message("before the revoke")
            assert (await inbox.get(timeout=TIMEOUT)).data.text == "before the revoke"
            errors = ben.events("error")
            left = ana.events("peer_left")
            ben_id = ben.peer_id
            assert ana._mesh is not None
            assert ben._mesh is not None
            # the host is slow to close its link (a busy machine): frames the
            # guest sends meanwhile do reach the host's end of it
            closing = ana._mesh.remove_peer
            release = asyncio.Event()

            async def slow_remove(peer_id: str) -> None:
                await release.wait()
                await closing(peer_id)

            ana._mesh.remove_peer = slow_remove  # type: ignore[method-assign]

            async def keep_going() -> None:
                """A modified guest: it ignores the end and keeps its links."""

            ben._put_out = keep_going  # type: ignore[method-assign]
            await ana.revoke_invite(link)
            assert ben_id not in ana.peers  # gone before the revoke's reply
            await ben.send_message("after the revoke")
            # the host's link has read it: the pong to a ping sent after it
            # is back, and the message is acknowledged
            out = ben._mesh.links[ana.peer_id or ""].out
            await out.drain(TIMEOUT)
            assert not out.unacked
            assert [m.text for m in ana.messages] == ["before the revoke"]
            release.set()
            gone = await left.get(timeout=TIMEOUT)
            assert (gone.peer_id, gone.data["reason"]) == (ben_id, "revoked")
            told = await errors.wait_for(
                "error", lambda e: isinstance(e.data, AuthError), timeout=TIMEOUT
            )
            assert "your invite was revoked" in str(told.data)
            assert told.data.code == "invite_revoked"
            assert ben._signaling is not None
            assert ben._signaling._reconnector is None
            assert [m.text for m in ana.messages] == ["before the revoke"]
        finally:
            await ben.disconnect()


async def call_then_rest(sock: RawSocket, event: str, data: dict[str, Any]) -> list[Any]:
    """Send one request; every Socket.IO packet that follows until the
    transport closes, decoded (the reply and the events, in arrival order)."""
    sock.acks += 1
    await sock.ws.send_str(f"42{sock.acks}" + json.dumps([event, data]))
    seen: list[Any] = []
    for packet in await sock.rest():
        kind, body = packet[:2], packet[2:].lstrip("0123456789")
        seen.append((kind, json.loads(body) if body else None))
    return seen


@pytest.mark.parametrize("event", ["leave", "join", "signal", "relay", "update"])
async def test_after_its_expiry_an_invite_gets_no_request_through(
    signal_server: RunningServer, event: str
) -> None:
    """A live socket whose invite has expired (the clock moved past it) has
    each request refused with ``invite_expired``, and its session ends: the
    room hears it left (reason ``expired``), the transport closes."""
    clock = set_clock(signal_server)
    async with host(Where(signal_server.url, signal_server.token), "exp1") as ana:
        link = await ana.create_invite(ttl=600)
        async with raw_socket(signal_server.url, parse_invite(link).token) as guest:
            assert (await guest.connect()).startswith("40{")
            assert (await guest.call("join", {"room": "exp1", "name": "eve"}))["ok"] is True
            left = ana.events("peer_left")
            clock.offset = 601.0
            payload = {
                "leave": {},
                "join": {"room": "exp1", "name": "eve"},
                "signal": {"to": ana.peer_id, "type": "candidate", "candidate": None},
                "relay": {"to": ana.peer_id, "data": "hello"},
                "update": {"capabilities": {}},
            }[event]
            seen = await call_then_rest(guest, event, payload)
            replies = [body[0] for kind, body in seen if kind == "43"]
            assert [r["error"]["code"] for r in replies] == ["invite_expired"]
            ended = [body[1] for kind, body in seen if kind == "42" and body[0] == "session_ended"]
            assert [e["reason"] for e in ended] == ["expired"]
            assert "your invite expired" in ended[0]["message"]
            gone = await left.get(timeout=TIMEOUT)
            assert (gone.data["name"], gone.data["reason"]) == ("eve", "expired")
        assert len(signal_server.service.peers) == 1  # only the host is left


async def test_an_invite_ends_its_sessions_when_it_expires(signal_server: RunningServer) -> None:
    """No request needed: at the invite's expiry its session ends (engine.io's
    pings would keep an idle socket open for ever), and a Python guest is
    told so (``AuthError``, not a reconnect loop)."""
    clock = set_clock(signal_server)
    async with host(Where(signal_server.url, signal_server.token), "exp2") as ana:
        link = await ana.create_invite(ttl=60)
        token = parse_invite(link).token
        expires = signal_server.service.invites.check(token).expires
        clock.offset = expires - 3.0 - time.time()  # 3 s left from now
        left = ana.events("peer_left")
        async with raw_socket(signal_server.url, token) as idle:
            assert (await idle.connect()).startswith("40{")
            assert (await idle.call("join", {"room": "exp2", "name": "eve"}))["ok"] is True
            ben = await P2PApp.connect(invite=link, thread=False)
            try:
                errors = ben.events("error")
                await ben.join_room(name="ben")
                rest = await idle.rest()  # sends nothing: the timer ends it
                assert any(p.startswith('42["session_ended",{"reason":"expired"') for p in rest)
                told = await errors.wait_for(
                    "error", lambda e: isinstance(e.data, AuthError), timeout=TIMEOUT
                )
                assert "your invite expired" in str(told.data)
                assert told.data.code == "invite_expired"
                reasons = {(await left.get(timeout=TIMEOUT)).data["reason"] for _ in range(2)}
                assert reasons == {"expired"}
            finally:
                await ben.disconnect()


async def test_a_revoked_browser_guest_sees_why_and_stops(
    signal_server: RunningServer, users: Users
) -> None:
    """The web client's final state: the page says the invite was revoked,
    never "reconnecting", its links are closed, and the host has dropped it."""
    kernel = await P2PApp.connect(signal_server.url, signal_server.token, thread=False)
    try:
        await kernel.join_room("webrev", name="host", secret=new_room_secret())
        link = await kernel.create_invite(ttl=600)
        guest = await users.open(link)
        await join(guest, "guest", room=None)
        await wait_connected(guest, "host")
        left = kernel.events("peer_left")
        await kernel.revoke_invite(link)
        await expect(guest.locator("#errors")).to_contain_text(
            "You are out of the room: your invite was revoked"
        )
        await expect(guest.locator("#left-view")).to_be_visible()
        assert (await left.get(timeout=TIMEOUT)).data["reason"] == "revoked"
        assert kernel.peers == {}
        client = "window.p2pClient()"
        assert await guest.evaluate(f"{client}.links.size") == 0
        assert await guest.evaluate(f"{client}.socket.connected") is False
        assert await guest.evaluate(f"{client}.socket.io._reconnecting") is not True
        assert "reconnecting" not in (await guest.locator("#connection").inner_text())
        assert "lost" not in (await guest.locator("#errors").inner_text())
    finally:
        await kernel.disconnect()
