"""The safety code: the same on both ends of an honest link, different on the
two ends when the signaling server puts itself in the middle (a real attacker
here: two aiortc connections of its own and a forwarding loop)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from p2p_nb import protocol
from p2p_nb.app import P2PApp

from .conftest import MakePeer, RunningServer, joined, start_server
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

CODE = re.compile(r"^\d{3} \d{3}$")


def code(app: P2PApp, other: P2PApp) -> str | None:
    return app.connection_status(other.peer_id or "").safety_code


async def test_both_ends_of_a_link_show_the_same_code(make_peer: MakePeer) -> None:
    a, b, c = [await make_peer(name) for name in ("ana", "ben", "cy")]
    await wait_mesh([a, b, c])
    ab = code(a, b)
    assert ab is not None
    assert CODE.match(ab)
    assert code(b, a) == ab
    assert code(a, c) == code(c, a)
    assert code(a, c) != ab  # another pair of certificates, another code


class ManInTheMiddle:
    """A hostile signaling server: it answers the offerer itself, makes its own
    offer to the other peer, and forwards every data-channel frame between
    the two connections it holds (reading them on the way)."""

    def __init__(self, server: RunningServer) -> None:
        self.service = server.service
        self.namespace = self.service.sio.namespace_handlers["/"]
        self.emit = self.namespace.emit
        self.namespace.emit = self.intercept
        self.pcs: list[RTCPeerConnection] = []
        self.read: list[str] = []
        self.ends: dict[str, RTCDataChannel] = {}

    def sid(self, peer_id: str) -> str:
        return next(
            sid
            for members in self.service.rooms.values()
            for p, sid in members.items()
            if p == peer_id
        )

    async def intercept(self, event: str, data: Any = None, **kw: Any) -> None:
        if event != "signal" or data.get("type") not in ("offer", "answer", "candidate"):
            await self.emit(event, data, **kw)
            return
        if data["type"] == "offer":
            offerer = data["from"]
            answerer = next(
                p for members in self.service.rooms.values() for p in members if p != offerer
            )
            await self.answer_instead(offerer, answerer, data["sdp"])
        elif data["type"] == "answer":
            await self.pcs[1].setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        # candidates are dropped: aiortc puts them all in the descriptions

    async def answer_instead(self, offerer: str, answerer: str, sdp: str) -> None:
        to_offerer, to_answerer = RTCPeerConnection(), RTCPeerConnection()
        self.pcs += [to_offerer, to_answerer]
        other = to_answerer.createDataChannel(
            protocol.CHANNEL_LABEL, ordered=True, protocol=protocol.CHANNEL_PROTOCOL
        )
        self.ends[answerer] = other

        @to_offerer.on("datachannel")
        def _(channel: RTCDataChannel) -> None:
            self.ends[offerer] = channel
            self.forward(channel, other)
            self.forward(other, channel)

        await to_offerer.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await to_offerer.setLocalDescription(await to_offerer.createAnswer())
        answer = {"from": answerer, "type": "answer", "sdp": to_offerer.localDescription.sdp}
        await self.emit("signal", answer, to=self.sid(offerer))
        await to_answerer.setLocalDescription(await to_answerer.createOffer())
        offer = {"from": offerer, "type": "offer", "sdp": to_answerer.localDescription.sdp}
        await self.emit("signal", offer, to=self.sid(answerer))

    def forward(self, src: RTCDataChannel, dst: RTCDataChannel) -> None:
        @src.on("message")
        def _(frame: str | bytes) -> None:
            if isinstance(frame, str):
                self.read.append(frame)
            if dst.readyState == "open":
                dst.send(frame)

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


@pytest.fixture
async def hostile_server() -> AsyncIterator[tuple[RunningServer, ManInTheMiddle]]:
    server = await start_server()
    mitm = ManInTheMiddle(server)
    yield server, mitm
    await mitm.close()
    await server.stop()


async def test_a_man_in_the_middle_shows_as_two_different_codes(
    hostile_server: tuple[RunningServer, ManInTheMiddle],
) -> None:
    server, mitm = hostile_server
    async with joined(server, "ana", "ben") as apps:
        a, b = apps
        await wait_mesh(apps)
        inbox = b.events("message")
        await a.send_message("our secret plan")
        assert (await inbox.get(timeout=10)).data.text == "our secret plan"
        # the attack works: the link looks fine and the middle read the message
        assert any("our secret plan" in frame for frame in mitm.read)
        assert a.connection_status(b.peer_id or "").state == "connected"
        # ... and the codes the two users compare give it away
        ours, theirs = code(a, b), code(b, a)
        assert ours is not None
        assert theirs is not None
        assert CODE.match(ours)
        assert ours != theirs
