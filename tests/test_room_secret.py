"""Rooms with a secret: every offer, answer and relay request carries an
authenticator only members can make, so a signaling server in the middle is
refused (and reads nothing), and a peer without the secret never connects."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from p2p_nb.app import P2PApp
from p2p_nb.errors import NameRefused, ProtocolError, RoomSecretError
from p2p_nb.names import REFUSED_MARK
from p2p_nb.rekey import MAX_REKEYS_PER_MINUTE, Rekey, RoomEpochs
from p2p_nb.roomkey import RoomKey, sdp_identity

from .conftest import RunningServer, start_server
from .test_mesh import wait_mesh
from .test_safety_code import ManInTheMiddle, code, settled
from .vectors import vectors

pytestmark = pytest.mark.anyio

SECRET = "correct horse battery staple"


@asynccontextmanager
async def members(
    server: RunningServer, *people: tuple[str, str | None]
) -> AsyncIterator[list[P2PApp]]:
    """One app per (name, secret), joined to ``team`` (disconnected after)."""
    apps: list[P2PApp] = []
    try:
        for name, secret in people:
            app = await P2PApp.connect(server.url, server.token, thread=False)
            apps.append(app)
            await app.join_room("team", name=name, secret=secret)
        yield apps
    finally:
        for app in apps:
            await app.disconnect()


class SignalLog:
    """Every signal the server hands on, kept (the operator's view)."""

    def __init__(self, server: RunningServer) -> None:
        self.namespace = server.service.sio.namespace_handlers["/"]
        self.emit = self.namespace.emit
        self.namespace.emit = self.intercept
        self.signals: list[dict[str, Any]] = []

    async def intercept(self, event: str, data: Any = None, **kw: Any) -> None:
        if event == "signal":
            self.signals.append(dict(data))
        await self.emit(event, data, **kw)

    def close(self) -> None:
        self.namespace.emit = self.emit


async def lost_with_reason(app: P2PApp, timeout: float = 20) -> dict[str, Any]:
    stream = app.events("peer_state")
    try:
        return (
            await stream.wait_for("peer_state", lambda e: e.data["new"] == "lost", timeout=timeout)
        ).data
    finally:
        stream.close()


async def test_members_with_the_secret_connect_and_every_description_is_authenticated(
    signal_server: RunningServer,
) -> None:
    log = SignalLog(signal_server)
    try:
        async with members(signal_server, ("ana", SECRET), ("ben", SECRET), ("cy", SECRET)) as apps:
            await wait_mesh(apps)
            inbox = apps[1].events("message")
            await apps[0].send_message("hello, members")
            assert (await inbox.get(timeout=10)).data.text == "hello, members"
        descriptions = [s for s in log.signals if s["type"] in ("offer", "answer")]
        assert len(descriptions) >= 6
        assert all(len(s.get("auth", "")) == 64 for s in descriptions)
        assert not any(SECRET in repr(s) for s in log.signals)  # the secret never travels
    finally:
        log.close()


@pytest.mark.parametrize("intruder_secret", [None, "another secret entirely"])
async def test_a_peer_without_the_secret_is_refused_and_the_rest_goes_on(
    signal_server: RunningServer, intruder_secret: str | None
) -> None:
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET)) as apps:
        ana, ben = apps
        await wait_mesh(apps)
        errors = ana.events("error")
        lost = asyncio.ensure_future(lost_with_reason(ana))
        async with members(signal_server, ("mallory", intruder_secret)) as (mallory,):
            change = await lost
            error = await errors.wait_for(
                "error", lambda e: isinstance(e.data, RoomSecretError), timeout=20
            )
            assert error.peer_id == mallory.peer_id
            assert "authenticator" in change["reason"]
            assert ana.connection_status(mallory.peer_id or "").state == "lost"
            assert mallory.connected_peers() == []
            # the members' own link is untouched
            inbox = ben.events("message")
            await ana.send_message("still just us")
            assert (await inbox.get(timeout=10)).data.text == "still just us"
            assert ana.connected_peers() == [ben.peer_id]


async def test_a_signaling_server_in_the_middle_is_refused_and_reads_nothing() -> None:
    """The attacker of test_safety_code, now against a room with a secret: both
    users refuse its descriptions, no channel opens, nothing reaches it."""
    server = await start_server()
    mitm = ManInTheMiddle(server)
    try:
        async with members(server, ("ana", SECRET), ("ben", SECRET)) as apps:
            refused = [asyncio.ensure_future(lost_with_reason(app)) for app in apps]
            for change in await asyncio.gather(*refused):
                assert "authenticator" in change["reason"]
            for app in apps:
                assert app.connected_peers() == []
            assert mitm.read == []
            assert all(ch.readyState != "open" for ch in mitm.ends.values())
    finally:
        await mitm.close()
        await server.stop()


async def test_without_a_secret_the_same_attack_still_shows_as_two_codes() -> None:
    server = await start_server()
    mitm = ManInTheMiddle(server)
    try:
        async with members(server, ("ana", None), ("ben", None)) as apps:
            await wait_mesh(apps)
            a, b = apps
            assert await settled(a, b) != await settled(b, a)
    finally:
        await mitm.close()
        await server.stop()


REVISION_2_AND_3_FIELDS = frozenset({"attempt", "commit", "nonce", "pin", "keep", "auth"})
"""What revisions 2 and 3 added to offers and answers (docs/protocol.md)."""


def speak_revision_1(app: P2PApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """``app``'s signals leave as a revision 1 peer's would: offers and answers
    without the attempt tag, the safety-code fields or an authenticator."""
    signaling = app._signaling
    assert signaling is not None
    send = signaling.signal

    async def signal(to: str, payload: dict[str, Any], **kw: Any) -> None:
        old = {k: v for k, v in payload.items() if k not in REVISION_2_AND_3_FIELDS}
        await send(to, old, **kw)

    monkeypatch.setattr(signaling, "signal", signal)


@pytest.mark.parametrize("old_offers", [True, False], ids=["old-offers", "old-answers"])
async def test_a_peer_of_revision_1_connects_and_chats_in_a_room_without_a_secret(
    signal_server: RunningServer, monkeypatch: pytest.MonkeyPatch, old_offers: bool
) -> None:
    """Compatibility (docs/protocol.md): in a room without a secret, a peer
    whose descriptions carry none of the later fields still connects, as
    offerer or answerer, and chats both ways; its link shows no safety code."""
    log = SignalLog(signal_server)
    async with members(signal_server, ("new", None)) as (new,):
        errors = new.events("error")
        # the smaller peer id offers: join until the old peer has the role wanted
        # (a new connection each time: a rejoin on one connection may keep its id)
        for _ in range(20):
            old = await P2PApp.connect(signal_server.url, signal_server.token, thread=False)
            speak_revision_1(old, monkeypatch)
            await old.join_room("team", name="old")
            if ((old.peer_id or "") < (new.peer_id or "")) == old_offers:
                break
            await old.disconnect()
        else:
            pytest.fail("20 joins without the wanted order of peer ids")
        try:
            await wait_mesh([new, old])
            for sender, receiver, text in ((new, old, "to the old one"), (old, new, "and back")):
                inbox = receiver.events("message")
                await sender.send_message(text)
                assert (await inbox.get(timeout=10)).data.text == text
            # a code would be settled by now (the reveal goes first on the channel)
            assert code(new, old) is None
            assert code(old, new) is None
            assert [e for e in errors.drain() if e.peer_id == old.peer_id] == []
            sent = [
                s
                for s in log.signals
                if s.get("from") == old.peer_id and s["type"] in ("offer", "answer")
            ]
            assert {s["type"] for s in sent} == {"offer" if old_offers else "answer"}
            assert not any(REVISION_2_AND_3_FIELDS & set(s) for s in sent)
        finally:
            log.close()
            await old.disconnect()


@pytest.mark.parametrize("secret", ["", "short", "x" * 1025])
async def test_an_unusable_secret_is_refused_before_joining(
    signal_server: RunningServer, secret: str
) -> None:
    app = await P2PApp.connect(signal_server.url, signal_server.token, thread=False)
    try:
        with pytest.raises(RoomSecretError, match="8 to 1024"):
            await app.join_room("team", name="ana", secret=secret)
        assert app.room is None
    finally:
        await app.disconnect()


def test_a_garbage_or_altered_authenticator_is_refused() -> None:
    key = RoomKey.derive("team", SECRET)
    offer = {"type": "offer", "sdp": "v=0\r\na=fingerprint:sha-256 AA:BB\r\n"}
    good = {**offer, "auth": key.authenticate("a", "b", offer)}
    key.check("a", "b", good)
    for bad in (
        {**offer, "auth": "zz"},
        {**offer, "auth": 12},
        offer,
        {**good, "sdp": good["sdp"].replace("AA", "CC")},  # another certificate
        {**good, "commit": "1" * 64},
        {**good, "attempt": "\ud800"},  # a lone surrogate: no UTF-8, refused all the same
    ):
        with pytest.raises(RoomSecretError):
            key.check("a", "b", bad)
    with pytest.raises(RoomSecretError):
        key.check("b", "a", good)  # the other direction
    assert SECRET not in repr(key)


def test_the_authenticator_writes_non_ascii_as_utf8() -> None:
    """docs/protocol.md ("Room secret"): non-ASCII is written as UTF-8, not
    escaped; only '"', '\\' and controls are (tests/test_vectors.py checks the
    resulting authenticator against docs/vectors.json)."""
    v = vectors("room_key")
    message = RoomKey.derive(v["room"], v["secret"])._message(v["from"], v["to"], v["odd_offer"])
    assert '"Üf"'.encode() in message
    assert '"é\\"/\\u0001\u2028"'.encode() in message


async def test_the_server_sees_neither_names_nor_capabilities_of_members(
    signal_server: RunningServer,
) -> None:
    """With a secret, the server holds pseudonyms and sealed blobs; members see
    each other's real names and capabilities (late joiners too)."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET)) as (ana, ben):
        await ana.update_capabilities(services=["messaging", "gpu-box"])
        async with members(signal_server, ("cy", SECRET)) as (cy,):
            await wait_mesh([ana, ben, cy])
            for app in (ben, cy):
                got = await wait_for_name(app, ana.peer_id or "", "ana")
                assert got.name == "ana"
                caps = await wait_for_caps(app, ana.peer_id or "", "gpu-box")
                assert "gpu-box" in caps.services
            seen = [(p.name, p.capabilities) for p in signal_server.service.peers.values()]
            assert len(seen) == 3
            for name, caps in seen:
                assert name.startswith("member-")
                assert set(caps) == {"sealed"}
            # What the server holds, as bytes: the pseudonyms and the blobs
            # decoded (a plain substring test of base64 text matches by chance).
            held = b"".join(name.encode() + base64.b64decode(caps["sealed"]) for name, caps in seen)
            for secret_text in ('"ana"', '"ben"', '"cy"', '"gpu-box"', '"messaging"'):
                assert secret_text.encode() not in held


async def wait_for_name(app: P2PApp, peer_id: str, name: str, timeout: float = 20) -> Any:
    stream = app.events("peer_updated", "peer_joined")
    try:
        async with asyncio.timeout(timeout):
            while app.peers.get(peer_id) is None or app.peers[peer_id].name != name:
                await stream.get()
        return app.peers[peer_id]
    finally:
        stream.close()


async def wait_for_caps(app: P2PApp, peer_id: str, service: str, timeout: float = 20) -> Any:
    stream = app.events("peer_updated", "peer_joined")
    try:
        async with asyncio.timeout(timeout):
            while service not in app.remote_capabilities(peer_id).services:
                await stream.get()
        return app.remote_capabilities(peer_id)
    finally:
        stream.close()


def test_a_profile_opens_only_for_its_peer_and_its_room() -> None:
    key = RoomKey.derive("team", SECRET)
    sealed = key.seal_profile("aaaa", "ana", {"services": ["x"]})
    assert key.open_profile("aaaa", sealed) == ("ana", {"services": ["x"]})
    assert key.open_profile("aaaa", {"services": []}) is None  # not sealed
    with pytest.raises(RoomSecretError):
        key.open_profile("bbbb", sealed)  # moved onto another member
    with pytest.raises(RoomSecretError):
        RoomKey.derive("other", SECRET).open_profile("aaaa", sealed)
    with pytest.raises(RoomSecretError):
        key.open_profile("aaaa", {"sealed": "!!"})


APPENDED_ICE = "a=ice-ufrag:Evil\r\na=ice-pwd:EvilEvilEvilEvilEvilEv\r\n"
"""docs/protocol.md ("Authenticator"): a second pair of ICE credentials."""


async def test_a_description_with_a_second_set_of_ice_credentials_is_refused() -> None:
    """aiortc uses the last ``a=ice-ufrag``/``a=ice-pwd`` of a media section;
    the authenticator covers one set. A server that appends its own pair to an
    authenticated offer (so aiortc would answer the server's ICE agent) gets
    the offer refused, as it would one with a doubled fingerprint."""
    from aiortc import RTCPeerConnection
    from aiortc.sdp import SessionDescription

    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("p2p-nb")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    key = RoomKey.derive("team", SECRET)
    offer = {"type": "offer", "sdp": sdp, "attempt": "00" * 8}
    good = {**offer, "auth": key.authenticate("aaaa", "bbbb", offer)}
    key.check("aaaa", "bbbb", good)
    altered = {**good, "sdp": sdp + APPENDED_ICE}
    # what the attack buys: aiortc would take the appended credentials
    assert SessionDescription.parse(altered["sdp"]).media[0].ice.usernameFragment == "Evil"
    with pytest.raises(RoomSecretError, match="repeats a=ice-ufrag"):
        key.check("aaaa", "bbbb", altered)
    fingerprint = next(line for line in sdp.splitlines() if line.startswith("a=fingerprint:"))
    doubled = {**good, "sdp": f"{sdp}{fingerprint.replace(':', ': ', 1)}\r\n"}
    with pytest.raises(RoomSecretError, match="repeats a=fingerprint"):
        key.check("aaaa", "bbbb", doubled)
    # credentials given in the session part and, differently, in the media section
    session, media = sdp.split("\r\nm=", 1)
    moved = {**good, "sdp": session + "\r\na=ice-ufrag:Evil\r\nm=" + media}
    with pytest.raises(RoomSecretError, match="2 different a=ice-ufrag"):
        key.check("aaaa", "bbbb", moved)


def test_the_published_vector_with_appended_ice_credentials_is_refused() -> None:
    """docs/protocol.md ("Room secret"): the vector's offer with a second pair
    appended fails the check even with the vector's own authenticator."""
    key = RoomKey.derive("team", SECRET)
    offer = {
        "type": "offer",
        "sdp": "v=0\r\na=ice-ufrag:Uf\r\na=ice-pwd:Pw\r\na=fingerprint:sha-256 AA:BB\r\n",
        "attempt": "00" * 8,
        "commit": "11" * 32,
        "auth": vectors("room_key")["auth"],
    }
    key.check("aaaa", "bbbb", offer)
    with pytest.raises(RoomSecretError, match="refused: its SDP repeats a=ice-ufrag"):
        key.check("aaaa", "bbbb", {**offer, "sdp": offer["sdp"] + APPENDED_ICE})
    # in another m= section the same values are fine (a bundle), others are not
    section = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:"
    assert sdp_identity(offer["sdp"] + section + "Uf\r\n")["ice_ufrag"] == "Uf"
    with pytest.raises(RoomSecretError, match="2 different a=ice-ufrag"):
        sdp_identity(offer["sdp"] + section + "Ev\r\n")


async def test_a_guest_that_claims_a_members_name_is_not_shown_under_it(
    signal_server: RunningServer,
) -> None:
    """The server sees pseudonyms only, so in a room with a secret each member
    checks names: an invite guest whose sealed profile says "ana" (the host's
    name) or "BEN" (another member's, in another case) is shown by neither as
    that name, each sees a NameRefused, and the guest still chats, under the
    mark. When the real ben leaves, the name goes to the guest after all."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET)) as (ana, ben):
        link = await ana.create_invite(ttl=600)
        errors = {app: app.events("error") for app in (ana, ben)}
        for claimed, other in (("ana", ben), ("BEN", ana)):
            guest = await P2PApp.connect(invite=link, thread=False)
            try:
                await guest.join_room(name=claimed)
                gid = guest.peer_id or ""
                mark = REFUSED_MARK + gid
                await wait_mesh([ana, ben, guest])
                for app in (ana, ben):
                    await wait_for_name(app, gid, mark)
                    refused = await errors[app].wait_for(
                        "error", lambda e, g=gid: isinstance(e.data, NameRefused) and e.peer_id == g
                    )
                    assert refused.data.code == "name_taken"
                    assert repr(claimed) in str(refused.data)
                inbox = other.events("message")
                await guest.send_message("it's me, honest")
                got = await inbox.get(timeout=10)
                assert (got.data.text, got.data.sender_name) == ("it's me, honest", mark)
                assert ana.peers[ben.peer_id or ""].name == "ben"
            finally:
                if claimed == "ana":
                    await guest.disconnect()
        # guest "BEN" is still in: once ben has left, ana shows the name for it
        await ben.leave_room()
        assert (await wait_for_name(ana, gid, "BEN")).name == "BEN"
        await guest.disconnect()


async def test_a_peer_without_the_secret_cannot_take_a_name_through_the_server(
    signal_server: RunningServer,
) -> None:
    """Without a sealed profile, the name the server holds is what members
    would show; the server checked it only against pseudonyms."""
    async with (
        members(signal_server, ("ana", SECRET)) as (ana,),
        members(signal_server, ("Ana", None)) as (mallory,),
    ):
        mid = mallory.peer_id or ""
        got = await wait_for_name(ana, mid, REFUSED_MARK + mid)
        assert got.name != "Ana"


async def rekeyed_to(app: P2PApp, epoch: int, timeout: float = 20) -> None:
    stream = app.events("room_rekeyed")
    try:
        async with asyncio.timeout(timeout):
            while app._epochs is None or app._epochs.epoch < epoch:
                await stream.get()
    finally:
        stream.close()


async def rekeyed_by(app: P2PApp, by: str, timeout: float = 20) -> None:
    stream = app.events("room_rekeyed")
    try:
        async with asyncio.timeout(timeout):
            while app._epochs is None or app._epochs.by != by:
                await stream.get()
    finally:
        stream.close()


async def test_revoking_an_invite_rekeys_the_room_without_its_guest(
    signal_server: RunningServer,
) -> None:
    """``revoke_invite`` re-keys by default: the members that stay agree on a
    new secret over their links; the guest's links close; the old secret
    (which the guest has, and could give the operator) gets a description
    refused by every member; the members still chat, and a newcomer with an
    invite made afterwards (carrying the new secret) connects to both."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET)) as (ana, ben):
        link = await ana.create_invite(ttl=600)
        guest = await P2PApp.connect(invite=link, thread=False)
        try:
            await guest.join_room(name="gus")
            await wait_mesh([ana, ben, guest])
            gid = guest.peer_id or ""
            left = ben.events("peer_left")
            errors = [app.events("error") for app in (ana, ben)]
            await ana.revoke_invite(link)
            await rekeyed_to(ben, 1)
            assert ana._room_secret == ben._room_secret != SECRET
            gone = await left.wait_for("peer_left", lambda e: e.peer_id == gid, timeout=20)
            # the server ends its session first (peer_left "revoked"); the re-key drops it too
            assert gone.data["reason"] in ("revoked", "rekeyed")
            assert gid not in ana.peers
            assert gid not in ben.peers
            assert guest.connected_peers() == []
            # nothing went wrong on the way: no refused re-key, no profile that did not open
            assert [e.data for stream in errors for e in stream.drain()] == []
        finally:
            await guest.disconnect()
        # the old secret, as the revoked guest (or an operator it told) has it:
        # a peer the server lets in with it is refused by each member
        async with members(signal_server, ("mallory", SECRET)) as (mallory,):
            refused = [asyncio.ensure_future(lost_with_reason(app)) for app in (ana, ben)]
            for change in await asyncio.gather(*refused):
                assert "authenticator" in change["reason"]
            assert mallory.connected_peers() == []
        inbox = ben.events("message")
        await ana.send_message("just us, new key")
        assert (await inbox.get(timeout=10)).data.text == "just us, new key"
        fresh = await ana.create_invite(ttl=600)
        newcomer = await P2PApp.connect(invite=fresh, thread=False)
        try:
            await newcomer.join_room(name="cy")
            await wait_mesh([ana, ben, newcomer])
            assert (await wait_for_name(ben, newcomer.peer_id or "", "cy")).name == "cy"
            assert (await wait_for_name(newcomer, ana.peer_id or "", "ana")).name == "ana"
        finally:
            await newcomer.disconnect()


async def test_two_rekeys_at_once_end_in_one_secret(signal_server: RunningServer) -> None:
    """Concurrent re-keys at the same epoch: the smaller initiator id wins,
    at every member, and the room goes on under it."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET), ("cy", SECRET)) as apps:
        await wait_mesh(apps)
        ana, ben, cy = apps
        assert await asyncio.gather(ana.rekey(), ben.rekey()) == [1, 1]
        winner = min((ana, ben), key=lambda app: app.peer_id or "")
        for app in apps:
            await rekeyed_to(app, 1)
        for app in apps:
            await rekeyed_by(app, winner.peer_id or "")
        assert len({app._room_secret for app in apps}) == 1
        inbox = cy.events("message")
        await ana.send_message("one key")
        assert (await inbox.get(timeout=10)).data.text == "one key"


async def test_a_member_that_missed_the_rekey_gets_it_when_its_link_is_back(
    signal_server: RunningServer,
) -> None:
    """cy misses the re-key (it drops the message); when its link to ana is
    made again, the descriptions use the old key, which ana accepts only with
    cy's recorded fingerprint, and ana hands it the new epoch first thing."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET), ("cy", SECRET)) as apps:
        await wait_mesh(apps)
        ana, ben, cy = apps
        dropped: list[str] = []
        rekeying = cy._rekeying
        assert rekeying is not None
        on_message = rekeying.on_message
        rekeying.on_message = lambda peer_id, payload: dropped.append(peer_id)  # type: ignore[method-assign]
        await ana.rekey()
        await rekeyed_to(ben, 1)
        async with asyncio.timeout(20):
            while len(dropped) < 2:  # from ana, and handed on by ben
                await asyncio.sleep(0.01)  # the drops are plain calls: poll them
        assert cy._epochs is not None
        assert cy._epochs.epoch == 0
        rekeying.on_message = on_message  # type: ignore[method-assign]
        back = ana.events("peer_state")
        link = ana._mesh.links[cy.peer_id or ""] if ana._mesh else None
        assert link is not None
        assert link.pc is not None
        await link.pc.close()  # the link fails, as a network outage would make it
        await back.wait_for("peer_state", lambda e: e.data["new"] == "reconnecting", timeout=20)
        await rekeyed_to(cy, 1)
        assert cy._room_secret == ana._room_secret != SECRET
        await wait_mesh(apps)
        inbox = ben.events("message")
        await cy.send_message("back, with the new key")
        assert (await inbox.get(timeout=10)).data.text == "back, with the new key"


def test_rekey_messages_are_checked_and_ordered() -> None:
    """docs/protocol.md ("Re-keying"): the fields, the winner of two re-keys,
    and the bans a re-key leaves."""
    members_ = {"aaaa": "sha-256 aa", "bbbb": "", "cccc": "sha-256 cc"}
    good = {"epoch": 1, "secret": "s" * 43, "by": "bbbb", "members": members_, "out": ["gggg"]}
    rekey = Rekey.from_payload(good)
    assert "s" * 43 not in repr(rekey)
    assert Rekey.from_payload(rekey.payload()) == rekey
    for bad in (
        {**good, "epoch": 0},
        {**good, "epoch": True},
        {**good, "epoch": 2**53},
        {**good, "secret": "short"},
        {**good, "by": "dddd"},  # not a member
        {**good, "by": "x y"},
        {**good, "members": {}},
        {**good, "members": {"bbbb": 1}},
        {**good, "out": ["aaaa"]},  # a member and out
        {**good, "out": "gggg"},
    ):
        with pytest.raises(ProtocolError, match="rekey"):
            Rekey.from_payload(bad)
    assert rekey.supersedes(0, "")
    assert rekey.supersedes(1, "cccc")  # same epoch: the smaller initiator
    assert not rekey.supersedes(1, "aaaa")
    assert not rekey.supersedes(2, "cccc")


def test_epochs_refuse_the_excluded_and_let_back_only_the_recorded_certificate() -> None:
    old = RoomKey.derive("team", SECRET)
    epochs = RoomEpochs(old, SECRET)
    members_ = {"aaaa": "sha-256 aa:aa", "bbbb": "sha-256 bb:bb", "cccc": ""}
    rekey = Rekey(1, "n" * 43, "aaaa", members_, ("gggg",))
    assert epochs.refuses("aaaa", rekey) is None
    epochs.adopt(rekey, RoomKey.derive("team", "n" * 43), "bbbb", {})
    assert epochs.refuses("aaaa", rekey) == "duplicate"
    # the excluded guest's own re-key, or one naming it, is never taken
    theirs = Rekey(2, "m" * 43, "gggg", {"gggg": ""}, ())
    assert epochs.refuses("gggg", theirs) is not None
    assert epochs.refuses("aaaa", Rekey(2, "m" * 43, "aaaa", {"aaaa": "", "gggg": ""})) is not None

    def offer(sdp_fp: str, key: RoomKey, sender: str) -> dict[str, Any]:
        sdp = f"v=0\r\na=ice-ufrag:Uf\r\na=ice-pwd:Pw\r\na=fingerprint:{sdp_fp}\r\n"
        signal = {"type": "offer", "sdp": sdp}
        return {**signal, "auth": key.authenticate(sender, "bbbb", signal)}

    # aaaa missed nothing here, but its old-key offer with its own certificate passes
    epochs.key.check("aaaa", "bbbb", offer("sha-256 AA:AA", old, "aaaa"))
    # with another certificate (the revoked guest, given aaaa's id by the server) it does not
    with pytest.raises(RoomSecretError):
        epochs.key.check("aaaa", "bbbb", offer("sha-256 EE:EE", old, "aaaa"))
    with pytest.raises(RoomSecretError):  # no fingerprint recorded: no way back
        epochs.key.check("cccc", "bbbb", offer("sha-256 CC:CC", old, "cccc"))
    with pytest.raises(RoomSecretError):  # excluded, whatever certificate it names
        epochs.key.check("gggg", "bbbb", offer("sha-256 AA:AA", old, "gggg"))
    with pytest.raises(RoomSecretError):  # a new id without a recorded certificate
        epochs.key.check("hhhh", "bbbb", offer("sha-256 EE:EE", old, "hhhh"))
    # aaaa under a new id (a server restart): its certificate lets it back
    epochs.key.check("hhhh", "bbbb", offer("sha-256 AA:AA", old, "hhhh"))
    assert epochs.way_back("hhhh") is not None
    # a description with the new key confirms aaaa: the old key is gone for it
    epochs.key.check("aaaa", "bbbb", offer("sha-256 AA:AA", epochs.key, "aaaa"))
    with pytest.raises(RoomSecretError):
        epochs.key.check("aaaa", "bbbb", offer("sha-256 AA:AA", old, "aaaa"))


def test_a_member_cannot_make_us_derive_keys_without_end() -> None:
    """Each adopted re-key costs a scrypt: a link may cost at most
    MAX_REKEYS_PER_MINUTE of them a minute (docs/protocol.md, "Re-keying")."""
    epochs = RoomEpochs(RoomKey.derive("team", SECRET), SECRET)
    assert all(epochs.allow_derivation("mmmm", 100.0 + i) for i in range(MAX_REKEYS_PER_MINUTE))
    assert not epochs.allow_derivation("mmmm", 130.0)
    assert epochs.allow_derivation("aaaa", 130.0)  # per link
    assert epochs.allow_derivation("mmmm", 160.0)  # the first has aged out
