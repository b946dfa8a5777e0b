"""Invite links: one room, for a while, revocable, from any machine; on a
Jupyter server an invite opens the p2p socket and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from p2p_nb import AuthError, InviteError, new_room_secret
from p2p_nb.app import PUBLIC_URL_ENV, P2PApp
from p2p_nb.errors import RoomSecretError
from p2p_nb.invite import Invite, client_link, format_invite, parse_invite, same_server

from .conftest import RunningServer, spawn_signal_server, start_server, stop_process
from .jupyter_server import JupyterServer, run_jupyter_server
from .kernels import server_kernels
from .test_mesh import wait_mesh
from .test_room_secret import SECRET, SignalLog, lost_with_reason, members

pytestmark = pytest.mark.anyio


async def host(server: RunningServer, secret: str | None = None) -> P2PApp:
    """A token holder in room ``team``."""
    app = await P2PApp.connect(server.url, server.token, thread=False)
    await app.join_room("team", name="ana", secret=secret)
    return app


async def test_an_invite_brings_a_guest_into_the_room_with_its_secret(
    signal_server: RunningServer,
) -> None:
    secret = new_room_secret()
    ana = await host(signal_server, secret)
    log = SignalLog(signal_server)
    try:
        link = await ana.create_invite(ttl=600)
        invite = parse_invite(link)
        assert invite.room == "team"
        assert invite.secret == secret
        assert link.startswith(signal_server.url + "p2p/join#room=team&invite=inv1.")
        assert repr(invite).count("inv1.") == 0  # the token stays out of logs
        ben = await P2PApp.connect(invite=link, thread=False)  # nothing else
        try:
            assert await ben.join_room(name="ben")
            assert ben.room == "team"
            await wait_mesh([ana, ben])
            inbox = ana.events("message")
            await ben.send_message("hi from a guest")
            assert (await inbox.get(timeout=10)).data.text == "hi from a guest"
            assert all(len(s.get("auth", "")) == 64 for s in log.signals if "sdp" in s)
            assert not any(secret in repr(s) for s in log.signals)
        finally:
            await ben.disconnect()
    finally:
        log.close()
        await ana.disconnect()


async def test_an_invite_is_confined_to_its_room_and_cannot_invite(
    signal_server: RunningServer,
) -> None:
    ana = await host(signal_server)
    try:
        invite = parse_invite(await ana.create_invite())
        guest = await P2PApp.connect(signal_server.url, invite.token, thread=False)
        try:
            with pytest.raises(AuthError, match="other"):
                await guest.join_room("other", name="ben")
            assert guest.room is None
            await guest.join_room("team", name="ben")
            with pytest.raises(AuthError, match="cannot invite"):
                await guest.create_invite()
        finally:
            await guest.disconnect()
        app = await P2PApp.connect(invite=invite.url, thread=False)
        try:
            with pytest.raises(InviteError, match="room 'team'"):
                await app.join_room("other", name="cy")
        finally:
            await app.disconnect()
    finally:
        await ana.disconnect()


async def test_expired_altered_and_foreign_invites_are_refused_with_the_reason(
    signal_server: RunningServer, tmp_path: Path
) -> None:
    ana = await host(signal_server)
    try:
        link = await ana.create_invite(ttl=60)
        token = parse_invite(link).token
        payload = token[len("inv1.") :].split(".")[0]
        altered = link.replace(payload, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"))
        with pytest.raises(AuthError, match="altered"):
            await P2PApp.connect(invite=altered, thread=False)
        other = await start_server()
        try:
            foreign = link.replace(signal_server.url, other.url)
            with pytest.raises(AuthError, match="another server"):
                await P2PApp.connect(invite=foreign, thread=False)
        finally:
            await other.stop()
        books = signal_server.service.invites
        books._clock = lambda: time.time() + 120  # the invite's minute is over
        with pytest.raises(AuthError, match="expired"):
            await P2PApp.connect(invite=link, thread=False)
    finally:
        await ana.disconnect()


async def test_a_revoked_invite_lets_nobody_in_and_its_guests_out(
    signal_server: RunningServer,
) -> None:
    ana = await host(signal_server)
    try:
        link = await ana.create_invite()
        ben = await P2PApp.connect(invite=link, thread=False)
        try:
            await ben.join_room(name="ben")
            left = ana.events("peer_left")
            errors = ben.events("error")
            await ana.revoke_invite(link)
            gone = await left.get(timeout=20)  # at once: no grace period for a revoked guest
            assert (gone.peer_id, gone.data["reason"]) == (ben.peer_id, "revoked")
            # ben's client is told why, says so, and does not try to come back
            refused = await errors.wait_for("error", lambda e: "revoked" in str(e.data), timeout=30)
            assert isinstance(refused.data, AuthError)
            assert "your invite was revoked" in str(refused.data)
            assert ben._signaling is not None
            assert ben._signaling._reconnector is None
            # and it leaves the room: no link keeps retrying
            put_out = ben.events("peer_left")
            if ben.room is not None:
                await put_out.wait_for(
                    "peer_left", lambda e: e.data["reason"] == "session_ended", timeout=20
                )
            assert ben.room is None
            assert ben.connected_peers() == []
            with pytest.raises(AuthError, match="revoked"):
                await P2PApp.connect(invite=link, thread=False)
        finally:
            await ben.disconnect()
        # only its maker may revoke it
        other = await P2PApp.connect(signal_server.url, signal_server.token, thread=False)
        second = await ana.create_invite()
        try:
            await other.join_room("team", name="cy")
            await other.revoke_invite(second)  # same token, same identity: allowed
        finally:
            await other.disconnect()
    finally:
        await ana.disconnect()


async def test_only_the_maker_of_an_invite_may_revoke_it(signal_server: RunningServer) -> None:
    """A guest cannot revoke another invite of the room, nor the one it came
    with: the server refuses with its reason and both invites keep working."""
    ana = await host(signal_server)
    try:
        first, second = await ana.create_invite(), await ana.create_invite()
        ben = await P2PApp.connect(invite=first, thread=False)
        try:
            await ben.join_room(name="ben")
            for link in (second, first):
                with pytest.raises(AuthError, match="only the member who made an invite may"):
                    await ben.revoke_invite(link)
            for name, link in (("cy", second), ("dee", first)):
                guest = await P2PApp.connect(invite=link, thread=False)
                try:
                    await guest.join_room(name=name)
                    assert guest.room == "team"
                finally:
                    await guest.disconnect()
            assert ben.room == "team"
            assert ana.peers[ben.peer_id or ""].name == "ben"  # the guest was not put out
        finally:
            await ben.disconnect()
    finally:
        await ana.disconnect()


@pytest.mark.parametrize("guest_has", ["no secret", "another secret"])
async def test_an_invite_without_the_room_secret_is_refused_by_the_members(
    signal_server: RunningServer, guest_has: str
) -> None:
    """A valid invite token gets the guest into the room on the server, but
    without the secret its descriptions fail the members' authenticator check:
    no link opens, each side is told why, and the members' link stays up."""
    async with members(signal_server, ("ana", SECRET), ("ben", SECRET)) as (ana, ben):
        await wait_mesh([ana, ben])
        link = await ana.create_invite()
        assert parse_invite(link).secret == SECRET
        errors = ana.events("error")
        lost = asyncio.ensure_future(lost_with_reason(ana))
        if guest_has == "no secret":
            without = link.split("&secret=", 1)[0]
            assert parse_invite(without).secret is None
            mallory = await P2PApp.connect(invite=without, thread=False)
            secret = None
        else:
            mallory = await P2PApp.connect(invite=link, thread=False)
            secret = "not the room secret"
        try:
            guest_lost = asyncio.ensure_future(lost_with_reason(mallory))
            await mallory.join_room(name="mallory", secret=secret)
            assert mallory.room == "team"  # the server let it in: the token is valid
            change = await lost
            assert "authenticator" in change["reason"]
            error = await errors.wait_for(
                "error",
                lambda e: isinstance(e.data, RoomSecretError) and "authenticator" in str(e.data),
                timeout=20,
            )
            assert error.peer_id == mallory.peer_id
            assert ana.connection_status(mallory.peer_id or "").state == "lost"
            assert "authenticator" in (await guest_lost)["reason"]
            assert mallory.connected_peers() == []
            inbox = ben.events("message")
            await ana.send_message("still just us")
            assert (await inbox.get(timeout=10)).data.text == "still just us"
            assert ana.connected_peers() == [ben.peer_id]
        finally:
            await mallory.disconnect()


def invite_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "p2p_nb.invite"]


async def test_invites_name_the_callers_public_url_never_the_servers_claim(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a proxy or a tunnel: ``$P2P_NB_PUBLIC_URL`` (set by one's own
    Jupyter server for its kernels) and ``connect(public_url=...)`` name the
    address invites carry, in that order. The server's own claim
    (``create_app(public_url=...)``, the standalone ``--public-url``) is not
    taken when it is not where we connected: a hostile server would send the
    guests, and the room secret in their links, to a page of its choice."""
    monkeypatch.delenv(PUBLIC_URL_ENV, raising=False)
    caplog.set_level(logging.WARNING, logger="p2p_nb.invite")
    server = await start_server(public_url="https://p2p.example.org/base/")
    apps: list[P2PApp] = []
    try:

        async def invite_of(name: str, **kw: str) -> str:
            app = await P2PApp.connect(server.url, server.token, thread=False, **kw)
            apps.append(app)
            await app.join_room("team", name=name)
            return await app.create_invite()

        link = await invite_of("ana")
        assert link.startswith(server.url + "p2p/join#room=team&invite=inv1.")
        assert "p2p.example.org" not in link
        (warning,) = invite_warnings(caplog)
        assert "https://p2p.example.org/base/" in warning
        assert "public_url" in warning
        monkeypatch.setenv(PUBLIC_URL_ENV, "https://env.example.org/")
        link = await invite_of("ben")
        assert link.startswith("https://env.example.org/p2p/join#room=team&invite=inv1.")
        link = await invite_of("cy", public_url="https://tunnel.example.net/j/")
        assert link.startswith("https://tunnel.example.net/j/p2p/join#room=team&invite=inv1.")
        # only the address differs: the token is this server's
        monkeypatch.delenv(PUBLIC_URL_ENV)
        here = link.replace("https://tunnel.example.net/j/", server.url)
        guest = await P2PApp.connect(invite=here, thread=False)
        apps.append(guest)
        await guest.join_room(name="dee")
        assert guest.room == "team"
    finally:
        for app in apps:
            await app.disconnect()
        await server.stop()


async def test_the_standalone_servers_public_url_is_taken_only_where_we_connected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PUBLIC_URL_ENV, raising=False)
    caplog.set_level(logging.WARNING, logger="p2p_nb.invite")
    server = await spawn_signal_server("--public-url", "https://signal.example.org/")
    try:
        app = await P2PApp.connect(server.url, server.token, thread=False)
        try:
            await app.join_room("team", name="ana")
            link = await app.create_invite()
            assert link.startswith(server.url + "p2p/join#room=team&invite=inv1.")
            assert "https://signal.example.org/" in invite_warnings(caplog)[0]
        finally:
            await app.disconnect()
    finally:
        await stop_process(server.process)


def test_the_same_server_under_other_spellings() -> None:
    assert same_server("HTTP://Host:80/base", "http://host/base/")
    assert same_server("https://h:443/", "https://h")
    assert not same_server("https://h/", "http://h/")
    assert not same_server("https://h/a/", "https://h/b/")
    assert not same_server("https://h:8443/", "https://h/")
    assert not same_server("https://evil.example/?h", "https://h/")


@pytest.mark.parametrize("bad", ["p2p.example.org/base/", "ftp://p2p.example.org/", "https://"])
def test_a_malformed_public_url_stops_every_server_at_start(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in ``public_url`` fails where it is configured (the service, the
    standalone's ``--public-url``, the extension's trait), naming the value,
    rather than at the first invite."""
    from traitlets import TraitError

    from p2p_nb.jupyter_ext.app import P2PExtensionApp
    from p2p_nb.server.__main__ import main as signal_main
    from p2p_nb.server.standalone import create_app

    with pytest.raises(InviteError, match="http\\(s\\) server URL"):
        create_app("tok", public_url=bad)
    with pytest.raises(SystemExit) as exited:
        signal_main(["--port", "0", "--public-url", bad])
    assert exited.value.code == 2
    assert f"--public-url: an invite needs an http(s) server URL, not {bad!r}" in (
        capsys.readouterr().err
    )
    with pytest.raises(TraitError, match="public_url"):
        P2PExtensionApp(public_url=bad)
    assert P2PExtensionApp(public_url="https://ok.example.org/").public_url


async def test_an_invite_without_a_room_secret_warns_that_the_operator_stays_trusted(
    signal_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The safe default is a room with a secret; an invite to a room joined
    without one works, has no ``secret=``, and says so in a logged warning."""

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "p2p_nb.app" and r.levelno == logging.WARNING
        ]

    caplog.set_level(logging.WARNING, logger="p2p_nb.app")
    ana = await host(signal_server)
    try:
        link = await ana.create_invite()
        assert "secret=" not in link
        assert parse_invite(link).secret is None
        assert [w for w in warnings() if "no room secret" in w] != []
        assert "stays trusted" in warnings()[-1]
    finally:
        await ana.disconnect()
    caplog.clear()
    ana = await host(signal_server, new_room_secret())
    try:
        assert "&secret=" in await ana.create_invite()
        assert not any("no room secret" in w for w in warnings())
    finally:
        await ana.disconnect()


@pytest.mark.parametrize(
    ("link", "why"),
    [
        ("ftp://host/p2p/join?room=a&invite=inv1.x", "http"),
        ("http://host/p2p/other?room=a&invite=inv1.x", "path"),
        ("http://host/p2p/join?invite=inv1.x", "one room"),
        ("http://host/p2p/join?room=a&room=b&invite=inv1.x", "'room' once"),
        ("http://host/p2p/join?room=a&invite=token", "invite token"),
        ("http://host/p2p/join?room=a", "invite token"),
        ("http://host/p2p/join#invite=inv1.x&secret=s3cr3t-s3cr3t", "one room"),
        ("http://host/p2p/join#room=a&invite=inv1.x&invite=inv1.y", "'invite' once"),
        ("http://host/p2p/join?invite=inv1.x#room=a&invite=inv1.x", "fragment only"),
        ("http://host/p2p/join#room=a&invite=inv1.x&server=ftp://x/", "http\\(s\\) server"),
        ("x" * 9000, "8192"),
    ],
)
async def test_a_malformed_invite_link_is_an_invite_error(link: str, why: str) -> None:
    with pytest.raises(InviteError, match=why):
        await P2PApp.connect(invite=link, thread=False)


def test_an_invite_link_keeps_token_and_secret_in_the_fragment_and_reads_the_first_form() -> None:
    """The link's query (what a browser sends, what proxies log) is empty;
    links of the first form (``?room=&invite=#secret``) still open."""
    secret = "pass word & = # é"
    link = format_invite("https://h.example/base/", "team", "inv1.a.b", secret)
    parts = urlsplit(link)
    assert (parts.path, parts.query) == ("/base/p2p/join", "")
    invite = parse_invite(link)
    assert (invite.server_url, invite.room, invite.token, invite.secret) == (
        "https://h.example/base/",
        "team",
        "inv1.a.b",
        secret,
    )
    old = "https://h.example/base/p2p/join?room=team&invite=inv1.a.b#pass%20word%20%26"
    invite = parse_invite(old)
    assert (invite.server_url, invite.token, invite.secret) == (
        "https://h.example/base/",
        "inv1.a.b",
        "pass word &",
    )
    # opened by a client the guest trusts: the page is elsewhere, the server is not
    mine = client_link(link, "http://127.0.0.1:8888/")
    assert mine.startswith("http://127.0.0.1:8888/p2p/join#room=team&invite=inv1.a.b&server=")
    assert parse_invite(mine) == invite_with(invite, secret=secret)


def invite_with(invite: Invite, **changes: str) -> Invite:
    return dataclasses.replace(invite, **changes)


KERNEL_HOST = """
import p2p_nb, pandas as pd
app = await p2p_nb.P2PApp.connect()
await app.join_room("lab", name="ana", secret=p2p_nb.new_room_secret())
links = app.events("peer_connected")
inbox = app.events("message")
print(await app.create_invite(ttl=3600))
"""

KERNEL_GUEST = """
import asyncio, p2p_nb
app = await p2p_nb.P2PApp.connect(invite={link!r})
files = app.events("file_offer", "file_received")
links = app.events("peer_connected")
await app.join_room(name="ben")
async with asyncio.timeout(30):
    while not app.connected_peers():
        await links.get()
await app.send_message("hello from another server")
print(app.room)
"""


async def test_kernels_of_two_jupyter_servers_meet_by_invite(
    jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    """Kernel A makes an invite on its server; kernel B, under another Jupyter
    server, joins with nothing but it; they chat and share a DataFrame. With
    the same token, A's REST API, kernels and terminals stay closed."""
    with run_jupyter_server(tmp_path) as other:
        async with server_kernels(jupyter_server, 1) as (ka,), server_kernels(other, 1) as (kb,):
            link = (await ka.run(KERNEL_HOST)).strip().splitlines()[-1]
            assert link.startswith(jupyter_server.url + "p2p/join#room=lab&invite=inv1.")
            assert (await kb.run(KERNEL_GUEST.format(link=link))).strip() == "lab"
            got = await ka.run("e = await inbox.get(timeout=30)\nprint(e.data.text)")
            assert got.strip() == "hello from another server"
            await ka.run(
                "df = pd.DataFrame({'x': range(1000), 'y': ['v'] * 1000})\n"
                "await app.share_dataframe(df, name='shared')"
            )
            got = await kb.run(
                "offer = (await files.wait_for('file_offer', timeout=30)).data\n"
                "await offer.accept()\n"
                "rec = (await files.wait_for('file_received', timeout=60)).data\n"
                "print(rec.dataframe().shape)"
            )
            assert got.strip() == "(1000, 2)"
            token = parse_invite(link).token
            await only_the_p2p_socket_opens(jupyter_server, token)
            await kb.run("await app.disconnect()")
            await ka.run("await app.disconnect()")


async def only_the_p2p_socket_opens(server: JupyterServer, token: str) -> None:
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for method, path in (
            ("GET", "api/contents"),
            ("POST", "api/kernels"),
            ("POST", "api/terminals"),
            ("GET", "api/sessions"),
            ("GET", "lab"),
            ("GET", "p2p/health"),
        ):
            async with http.request(method, server.url + path, allow_redirects=False) as resp:
                assert resp.status in (302, 401, 403), (method, path, resp.status)
                if resp.status == 302:  # a login page, never the resource
                    assert "login" in resp.headers["Location"]
        async with http.get(server.url + "p2p/invite") as resp:
            assert resp.status == 200
            assert (await resp.json())["room"] == "lab"


class BookClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_one_issuer_at_its_revocation_limit_leaves_the_list_to_the_others() -> None:
    """Each issuer may have :data:`MAX_REVOKED_PER_ISSUER` revoked, unexpired
    invites: beyond that its revokes and mints are refused with the reason,
    while another issuer still revokes; once its invites expire it may again."""
    from p2p_nb.server.auth import AuthRefused, Identity
    from p2p_nb.server.invites import MAX_REVOKED_PER_ISSUER, InviteBook

    clock = BookClock()
    book = InviteBook(clock=clock)
    spammer, other = Identity("token", "spammer"), Identity("jupyter", "bob")
    for _ in range(MAX_REVOKED_PER_ISSUER):
        token, _claim = book.mint("team", spammer, ttl=3600)
        book.revoke(token, spammer)
    assert book.revoked_by(spammer) == MAX_REVOKED_PER_ISSUER
    kept, _claim = book.mint("team", other, ttl=3600)
    with pytest.raises(AuthRefused, match=f"{MAX_REVOKED_PER_ISSUER} revoked invites"):
        book.mint("team", spammer, ttl=3600)
    book.revoke(kept, other)  # the spammer's share is full, not the list
    with pytest.raises(AuthRefused, match="revoked"):
        book.check(kept)
    assert book.revoked_by(other) == 1
    clock.now += 3601  # every one of them has expired: the list forgets them
    assert book.revoked_by(spammer) == 0
    assert book.revoked_by(other) == 0
    token, _claim = book.mint("team", spammer, ttl=60)
    book.revoke(token, spammer)
    assert book.revoked_by(spammer) == 1


def test_revocations_leave_the_list_in_expiry_order() -> None:
    """Pruning takes only what has expired, soonest first (a heap: no pass
    over the whole list per revoke), and a revoked invite stays refused until
    its own expiry."""
    from p2p_nb.server.auth import AuthRefused, Identity
    from p2p_nb.server.invites import InviteBook

    clock = BookClock()
    book = InviteBook(clock=clock)
    ana = Identity("token", "ana")
    tokens = {}
    for ttl in (300, 100, 200):
        tokens[ttl], _claim = book.mint("team", ana, ttl=ttl)
        book.revoke(tokens[ttl], ana)
    for step, left in ((150, 2), (250, 1), (350, 0)):
        clock.now = 1_000_000.0 + step
        assert book.revoked_by(ana) == left
        for ttl, token in tokens.items():
            with pytest.raises(AuthRefused, match="expired" if ttl <= step else "revoked"):
                book.check(token)


async def test_the_server_refuses_a_revoke_beyond_the_issuers_share_with_the_reason(
    signal_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the server: the member is told why (an ``AuthError``), for a
    revoke and for a new invite, and the invites it revoked stay revoked."""
    from p2p_nb.server import invites

    monkeypatch.setattr(invites, "MAX_REVOKED_PER_ISSUER", 3)
    ana = await host(signal_server)
    try:
        links = [await ana.create_invite(ttl=600) for _ in range(4)]
        for link in links[:3]:
            await ana.revoke_invite(link)
        with pytest.raises(AuthError, match="3 revoked invites that have not expired"):
            await ana.revoke_invite(links[3])
        with pytest.raises(AuthError, match="3 revoked invites that have not expired"):
            await ana.create_invite(ttl=600)
        with pytest.raises(AuthError, match="revoked"):
            await P2PApp.connect(invite=links[0], thread=False)
    finally:
        await ana.disconnect()
