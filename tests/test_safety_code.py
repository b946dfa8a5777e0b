"""The safety code: the same on both ends of an honest link, different on the
two ends when the signaling server puts itself in the middle (a real attacker
here: two aiortc connections of its own and a forwarding loop), the same
after a reconnect, and announced when the certificate at the other end changes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from p2p_nb import protocol, safety
from p2p_nb._aiortc import StableCertificate, sdp_fingerprint
from p2p_nb.app import P2PApp
from p2p_nb.errors import SafetyCodeError

from .conftest import MakePeer, RunningServer, joined, start_server
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

CODE = re.compile(r"^\d{3} \d{3}$")


def code(app: P2PApp, other: P2PApp) -> str | None:
    return app.connection_status(other.peer_id or "").safety_code


async def settled(app: P2PApp, other: P2PApp, timeout: float = 10) -> str:
    """``app``'s code for ``other`` once its exchange is complete (the answerer
    learns it one message after the channel opens: the offerer's reveal)."""
    stream = app.events("safety_code")
    try:
        async with asyncio.timeout(timeout):
            while (found := code(app, other)) is None:
                await stream.get()
    finally:
        stream.close()
    return found


async def test_both_ends_of_a_link_show_the_same_code(make_peer: MakePeer) -> None:
    a, b, c = [await make_peer(name) for name in ("ana", "ben", "cy")]
    await wait_mesh([a, b, c])
    for x, y in ((a, b), (b, a), (a, c), (c, a)):
        await settled(x, y)
    ab = code(a, b)
    assert ab is not None
    assert CODE.match(ab)
    assert code(b, a) == ab
    assert code(a, c) == code(c, a)
    assert code(a, c) != ab  # another pair of certificates, another code


class ManInTheMiddle:
    """A hostile signaling server: it answers the offerer itself, makes its own
    offer to the other peer, and forwards every data-channel frame between
    the two connections it holds (reading them on the way).

    It plays the safety-code exchange as well as it can: its own nonce in the
    answer to the offerer, a commitment to another nonce of its own in the
    offer to the answerer, and that nonce in place of the offerer's reveal
    (``forward_reveal``: pass the offerer's reveal on unchanged instead)."""

    def __init__(self, server: RunningServer, forward_reveal: bool = False) -> None:
        self.service = server.service
        self.namespace = self.service.sio.namespace_handlers["/"]
        self.emit = self.namespace.emit
        self.namespace.emit = self.intercept
        self.forward_reveal = forward_reveal
        self.pcs: list[RTCPeerConnection] = []
        self.read: list[str] = []
        self.ends: dict[str, RTCDataChannel] = {}
        self.nonce_to_offerer = safety.new_nonce()
        self.nonce_to_answerer = safety.new_nonce()

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
            await self.answer_instead(offerer, answerer, data)
        elif data["type"] == "answer":
            await self.pcs[1].setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        # candidates are dropped: aiortc puts them all in the descriptions

    async def answer_instead(self, offerer: str, answerer: str, offer: dict[str, Any]) -> None:
        to_offerer, to_answerer = RTCPeerConnection(), RTCPeerConnection()
        self.pcs += [to_offerer, to_answerer]
        other = to_answerer.createDataChannel(
            protocol.CHANNEL_LABEL, ordered=True, protocol=protocol.CHANNEL_PROTOCOL
        )
        self.ends[answerer] = other

        @to_offerer.on("datachannel")
        def _(channel: RTCDataChannel) -> None:
            self.ends[offerer] = channel
            self.forward(channel, other, replace_reveal=not self.forward_reveal)
            self.forward(other, channel)

        await to_offerer.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await to_offerer.setLocalDescription(await to_offerer.createAnswer())
        answer = {
            "from": answerer,
            "type": "answer",
            "sdp": to_offerer.localDescription.sdp,
            "attempt": offer.get("attempt"),
            "nonce": self.nonce_to_offerer,
            "keep": False,
        }
        await self.emit("signal", answer, to=self.sid(offerer))
        await to_answerer.setLocalDescription(await to_answerer.createOffer())
        mine = {
            "from": offerer,
            "type": "offer",
            "sdp": to_answerer.localDescription.sdp,
            "attempt": "mitm",
            "commit": safety.commitment(self.nonce_to_answerer),
        }
        if "auth" in offer:  # its best try in a room with a secret: the offerer's own
            mine["auth"] = offer["auth"]
        await self.emit("signal", mine, to=self.sid(answerer))

    def forward(
        self, src: RTCDataChannel, dst: RTCDataChannel, replace_reveal: bool = False
    ) -> None:
        """Every frame of ``src`` goes on to ``dst`` (held until ``dst`` opens)."""
        held: list[str | bytes] = []

        @dst.on("open")
        def _open() -> None:
            for frame in held:
                dst.send(frame)
            held.clear()

        @src.on("message")
        def _message(frame: str | bytes) -> None:
            if isinstance(frame, str):
                self.read.append(frame)
                if replace_reveal and '"safety-reveal"' in frame:
                    frame = protocol.SafetyReveal(self.nonce_to_answerer).encode()
            if dst.readyState == "open":
                dst.send(frame)
            else:
                held.append(frame)

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
        # ... and the codes the two users compare give it away (the middle had
        # to fix its answer to ana before it could learn her nonce)
        ours, theirs = await settled(a, b), await settled(b, a)
        assert CODE.match(ours)
        assert CODE.match(theirs)
        assert ours != theirs


async def test_a_reveal_that_breaks_its_commitment_is_reported_and_shows_no_code() -> None:
    """A middle that passes the offerer's nonce on under its own commitment:
    the answerer sees the mismatch, reports it and shows no code."""
    server = await start_server()
    mitm = ManInTheMiddle(server, forward_reveal=True)
    try:
        async with joined(server, "ana", "ben") as apps:
            a, b = apps
            offerer, answerer = (a, b) if (a.peer_id or "") < (b.peer_id or "") else (b, a)
            errors = answerer.events("error")
            await wait_mesh(apps)
            event = await errors.get(timeout=10)
            assert isinstance(event.data, SafetyCodeError)
            assert "commitment" in str(event.data)
            assert code(answerer, offerer) is None
            assert await settled(offerer, answerer)  # its side cannot tell
    finally:
        await mitm.close()
        await server.stop()


async def test_a_reconnect_keeps_the_code_and_says_nothing(make_peer: MakePeer) -> None:
    a, b = await make_peer("ana"), await make_peer("ben")
    await wait_mesh([a, b])
    before = (await settled(a, b), await settled(b, a))
    assert before[0] == before[1]
    changed = [a.events("safety_code_changed"), b.events("safety_code_changed")]
    fresh = [a.events("safety_code"), b.events("safety_code")]
    await a._mesh.link(b.peer_id or "").cut()  # type: ignore[union-attr]
    for stream in fresh:  # both ends went through a new exchange...
        assert (await stream.get(timeout=30)).data["code"] == before[0]
    await wait_mesh([a, b])
    assert (code(a, b), code(b, a)) == before  # ...and kept the code
    for stream in changed:
        assert stream.drain() == []


async def test_another_certificate_at_the_other_end_is_announced(make_peer: MakePeer) -> None:
    """What a man in the middle stepping in at a reconnect looks like: the
    other end's certificate changes, the code changes, and both users are told."""
    a, b = await make_peer("ana"), await make_peer("ben")
    await wait_mesh([a, b])
    old = await settled(a, b)
    changed = [a.events("safety_code_changed"), b.events("safety_code_changed")]
    b._mesh.certificate = StableCertificate()  # type: ignore[union-attr]
    await a._mesh.link(b.peer_id or "").cut()  # type: ignore[union-attr]
    for stream, name in zip(changed, ("ben", "ana"), strict=True):
        event = await stream.get(timeout=30)
        assert event.data["name"] == name
        assert event.data["old"] == old
        assert event.data["new"] != old
    assert await settled(a, b) == await settled(b, a) != old


async def test_every_connection_of_an_app_uses_its_one_certificate() -> None:
    """The stable certificate reaches into aiortc: this fails loudly if aiortc
    moves the certificate list (and the safety code would change per reconnect)."""
    cert = StableCertificate()
    want = {f"{fp.algorithm} {fp.value}".lower() for fp in cert.current().getFingerprints()}
    seen = set()
    for _ in range(2):
        pc = RTCPeerConnection()
        cert.apply(pc)
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        seen.add(sdp_fingerprint(pc.localDescription.sdp))
        await pc.close()
    assert len(seen) == 1
    assert seen <= want


def test_an_answerer_keeps_its_code_only_for_the_pinned_fingerprints() -> None:
    """A forged ``keep`` or ``pin`` cannot make a new certificate look known."""
    offerer, answerer = safety.SafetyState(), safety.SafetyState()

    def exchange(fp_o: str, fp_a: str, forged_keep: bool = False) -> tuple[str, str]:
        offer = offerer.offer_fields()
        answer = answerer.answer_fields(offer, fp_a, fp_o)
        if forged_keep:
            answer["keep"] = True
        offerer.on_answer(answer, fp_o, fp_a)
        nonce, _ = offerer.reveal()
        answerer.on_reveal(nonce)
        assert offerer.code is not None
        assert answerer.code is not None
        return offerer.code, answerer.code

    first = exchange("fo", "fa")
    assert first[0] == first[1]
    assert exchange("fo", "fa") == first  # same certificates: kept
    third = exchange("fo", "fx", forged_keep=True)  # other certificate at the answerer
    assert third[0] != first[0]


def test_a_malformed_commitment_is_a_safety_code_error() -> None:
    with pytest.raises(SafetyCodeError):
        safety.SafetyState().answer_fields({"commit": "xyz"}, "a", "b")
