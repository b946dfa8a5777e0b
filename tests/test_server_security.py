"""The signaling server against its own users: token holders, other identities, hostile names.

Real servers on 127.0.0.1 and plain Socket.IO clients (or our own
``SignalingClient`` where the exception it raises is the point).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from p2p_nb import NameRefused, ResumeRefused, SignalingError
from p2p_nb.app import P2PApp
from p2p_nb.server import Identity, ServerLimits, SignalingService, create_app, make_runner
from p2p_nb.server.auth import Authority, AuthRefused, Credentials, token_fingerprint
from p2p_nb.server.keyfile import KeyFileError, load_or_create_resume_key
from p2p_nb.server.standalone import SOCKETIO_PATH, token_from_request
from p2p_nb.signaling import SignalingClient

from .conftest import TOKEN, RunningServer, start_server, stop_process

pytestmark = pytest.mark.anyio

Connect = Callable[..., Awaitable[socketio.AsyncClient]]


@asynccontextmanager
async def clients(url: str) -> AsyncIterator[Connect]:
    """Open raw Socket.IO clients to ``url`` (token in the header); all closed after."""
    opened: list[socketio.AsyncClient] = []

    async def connect(token: str = TOKEN) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        await sio.connect(
            url,
            headers={"Authorization": f"token {token}"},
            transports=["websocket"],
            socketio_path=SOCKETIO_PATH,
        )
        opened.append(sio)
        return sio

    try:
        yield connect
    finally:
        for sio in opened:
            await sio.disconnect()


async def drop(sio: socketio.AsyncClient) -> None:
    """Lose the connection without a leave: the server keeps an away slot."""
    gone = asyncio.Event()
    sio.on("disconnect", lambda *args: gone.set())
    await sio.eio.disconnect(abort=True)
    await asyncio.wait_for(gone.wait(), 5)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a server-side state the test cannot be told about by an event."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def signaling_client() -> SignalingClient:
    return SignalingClient(
        on_peer_joined=lambda peer: None,
        on_peer_left=lambda pid, reason: None,
        on_signal=lambda pid, data: None,
        on_disconnected=lambda: None,
    )


# A server that tells two parties apart: standalone has one token, so one identity.
PEOPLE = {"alice-token": "alice", "bob-token": "bob"}


@asynccontextmanager
async def two_identity_server(limits: ServerLimits | None = None) -> AsyncIterator[RunningServer]:
    async def authenticate(environ: dict[str, Any], auth: Any) -> Identity:
        token = token_from_request(environ, auth)
        if token not in PEOPLE:
            raise AuthRefused("unknown token")
        return Identity("test", PEOPLE[token])

    service = SignalingService(async_mode="aiohttp", authenticate=authenticate, limits=limits)
    app = web.Application()
    service.sio.attach(app, socketio_path=SOCKETIO_PATH)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        yield RunningServer(url, "", service, runner)
    finally:
        service.close()
        await runner.cleanup()


# ------------------------------------------------------------------ resume (item 3)
async def test_token_holder_cannot_compute_anyone_resume_secret() -> None:
    """The resume key used to be HMAC(token, constant): every token holder could mint
    every peer's resume secret and take its id. Now it is random per server."""
    server = await start_server(limits=ServerLimits(resume_grace=30))
    try:
        async with clients(server.url) as connect:
            victim, thief, witness = await connect(), await connect(), await connect()
            left: asyncio.Queue[Any] = asyncio.Queue()
            witness.on("peer_left", left.put_nowait)
            joined = await victim.call("join", {"room": "r", "name": "vic", "resumable": True})
            await witness.call("join", {"room": "r", "name": "wit"})
            peer_id = joined["peer_id"]
            derived = hmac.new(TOKEN.encode(), b"p2p-nb resume key", hashlib.sha256).digest()
            identity = Identity("token", token_fingerprint(TOKEN))
            guesses = [
                hmac.new(derived, msg.encode(), hashlib.sha256).hexdigest()[:32]
                for msg in (
                    f"r\n{peer_id}",  # the old derivation
                    f"p2p-nb resume v2\nr\n{peer_id}\n{identity.key}",  # today's message
                )
            ]
            assert joined["resume_secret"] not in guesses
            await drop(victim)
            for guess in guesses:
                resume = {"peer_id": peer_id, "secret": guess}
                reply = await thief.call("join", {"room": "r", "name": "vic", "resume": resume})
                assert reply["error"]["code"] == "invalid_resume"
            assert server.service.rooms["r"][peer_id] is None  # still the victim's away slot
            assert left.empty()
    finally:
        await server.stop()


async def test_resume_with_another_identity_is_refused() -> None:
    """Bob holds Alice's real secret (leaked): it opens nothing for him."""
    async with (
        two_identity_server(ServerLimits(resume_grace=30)) as server,
        clients(server.url) as connect,
    ):
        alice = await connect("alice-token")
        joined = await alice.call("join", {"room": "r", "name": "alice", "resumable": True})
        resume = {"peer_id": joined["peer_id"], "secret": joined["resume_secret"]}
        await drop(alice)
        bob = signaling_client()
        try:
            await bob.connect(server.url, "bob-token")
            with pytest.raises(ResumeRefused) as refused:
                await bob.join("r", "bob", {}, resume=resume)
            assert refused.value.code == "invalid_resume"
            assert resume["secret"] not in str(refused.value)
        finally:
            await bob.close()
        # Alice herself still gets her id back, unseen
        again = await connect("alice-token")
        reply = await again.call("join", {"room": "r", "name": "alice", "resume": resume})
        assert reply["ok"]
        assert reply["resumed"] is True
        assert reply["peer_id"] == resume["peer_id"]


async def test_resume_never_takes_a_live_connection() -> None:
    """A second holder of the same credentials and the victim's secret: refused while
    the victim is connected, and the victim hears about it; its signals still reach it."""
    server = await start_server()
    try:
        async with clients(server.url) as connect:
            victim, thief, other = await connect(), await connect(), await connect()
            attempts: asyncio.Queue[Any] = asyncio.Queue()
            signals: asyncio.Queue[Any] = asyncio.Queue()
            victim.on("resume_attempt", attempts.put_nowait)
            victim.on("signal", signals.put_nowait)
            joined = await victim.call("join", {"room": "r", "name": "vic", "resumable": True})
            await other.call("join", {"room": "r", "name": "oth"})
            resume = {"peer_id": joined["peer_id"], "secret": joined["resume_secret"]}
            reply = await thief.call("join", {"room": "r", "name": "vic", "resume": resume})
            assert reply["ok"] is False
            assert reply["error"]["code"] == "peer_in_use"
            assert (await asyncio.wait_for(attempts.get(), 5)) == {
                "peer_id": joined["peer_id"],
                "outcome": "refused",
            }
            assert victim.connected
            sent = await other.call(
                "signal", {"to": joined["peer_id"], "type": "offer", "sdp": "v=0"}
            )
            assert sent == {"ok": True}
            assert (await asyncio.wait_for(signals.get(), 5))["sdp"] == "v=0"
            assert server.service.rooms["r"][joined["peer_id"]] == victim.get_sid()
    finally:
        await server.stop()


async def test_our_client_keeps_its_id_and_warns(
    signal_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p2p_nb.signaling")
    victim = signaling_client()
    try:
        await victim.connect(signal_server.url, TOKEN)
        joined = await victim.join("r", "vic", {})
        assert joined.resume_secret is not None
        resume = {"peer_id": joined.peer_id, "secret": joined.resume_secret}
        async with clients(signal_server.url) as connect:
            thief = await connect()
            reply = await thief.call("join", {"room": "r", "name": "vic", "resume": resume})
        assert reply["error"]["code"] == "peer_in_use"
        await until(lambda: "take over our peer id" in caplog.text)
        assert joined.resume_secret not in caplog.text
        assert victim.connected
    finally:
        await victim.close()


async def test_resume_replaces_a_connection_that_does_not_answer() -> None:
    """The case resume exists for: the old socket is dead but not yet closed (no
    answer to the probe). The client that comes back takes its place unseen."""
    server = await start_server(limits=ServerLimits(resume_probe_timeout=0.5))
    try:
        async with clients(server.url) as connect:
            old, new, other = await connect(), await connect(), await connect()
            stuck = asyncio.Event()

            async def never_answer(data: Any) -> None:
                await stuck.wait()  # the ack is sent only when this returns

            old.on("probe", never_answer)
            closed = asyncio.Event()
            old.on("disconnect", lambda *args: closed.set())
            presence: asyncio.Queue[Any] = asyncio.Queue()
            other.on("peer_left", presence.put_nowait)
            other.on("peer_joined", presence.put_nowait)
            joined = await old.call("join", {"room": "r", "name": "me", "resumable": True})
            await other.call("join", {"room": "r", "name": "oth"})
            resume = {"peer_id": joined["peer_id"], "secret": joined["resume_secret"]}
            reply = await new.call("join", {"room": "r", "name": "me", "resume": resume})
            stuck.set()
            assert reply["ok"]
            assert reply["resumed"] is True
            assert reply["peer_id"] == joined["peer_id"]
            await asyncio.wait_for(closed.wait(), 5)
            assert server.service.rooms["r"][joined["peer_id"]] == new.get_sid()
            assert presence.empty()
    finally:
        await server.stop()


async def test_away_slot_is_kept_when_a_resume_names_another_room() -> None:
    """A resume into the wrong room used to pop the slot anyway: the first room kept
    a ghost member for ever (no peer_left, never expired)."""
    server = await start_server(limits=ServerLimits(resume_grace=1.0))
    try:
        async with clients(server.url) as connect:
            a, b, c = await connect(), await connect(), await connect()
            left: asyncio.Queue[Any] = asyncio.Queue()
            b.on("peer_left", left.put_nowait)
            joined = await a.call("join", {"room": "r1", "name": "a", "resumable": True})
            await b.call("join", {"room": "r1", "name": "b"})
            peer_id = joined["peer_id"]
            await drop(a)
            # the secret this server would have given for r2 (only the server can make it)
            identity = server.service.peers[c.get_sid()].identity
            secret = server.service.resume_secret("r2", peer_id, identity)
            resume = {"peer_id": peer_id, "secret": secret}
            reply = await c.call("join", {"room": "r2", "name": "c", "resume": resume})
            assert reply["error"]["code"] == "invalid_resume"
            ev = await asyncio.wait_for(left.get(), 10)
            assert ev == {"peer_id": peer_id, "reason": "disconnected"}
            assert "r2" not in server.service.rooms
            assert list(server.service.rooms["r1"]) == [server.service.peers[b.get_sid()].peer_id]
    finally:
        await server.stop()


async def test_resume_key_file(tmp_path: Path) -> None:
    """Resume across restarts only where asked for: a 0600 file, refused when readable by others."""
    path = tmp_path / "resume.key"
    key = load_or_create_resume_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_resume_key(path) == key
    _, first = create_app(TOKEN, resume_key_file=path)
    _, second = create_app(TOKEN, resume_key_file=path)
    _, default = create_app(TOKEN)
    _, default2 = create_app(TOKEN)
    identity = Identity("token", token_fingerprint(TOKEN))
    assert first.resume_secret("r", "0" * 16, identity) == second.resume_secret(
        "r", "0" * 16, identity
    )
    assert default.resume_key != default2.resume_key
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_resume_key(path)
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError):
        load_or_create_resume_key(link)
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------- per-identity limits (item 8a)
async def test_connections_per_identity_are_capped() -> None:
    async with (
        two_identity_server(ServerLimits(max_connections_per_identity=2)) as server,
        clients(server.url) as connect,
    ):
        first = await connect("alice-token")
        await connect("alice-token")
        refused = signaling_client()
        try:
            with pytest.raises(SignalingError) as exc:
                await refused.connect(server.url, "alice-token")
            assert exc.value.code == "too_many_connections"
        finally:
            await refused.close()
        # another identity is not affected; a freed place can be used again
        await connect("bob-token")
        await first.disconnect()
        await until(lambda: server.service.connections["test:alice"] == 1)
        assert (await (await connect("alice-token")).call("join", {"room": "r"}))["ok"]


async def test_rooms_per_identity_are_capped() -> None:
    async with (
        two_identity_server(ServerLimits(max_rooms_per_identity=2)) as server,
        clients(server.url) as connect,
    ):
        a1, a2, a3 = [await connect("alice-token") for _ in range(3)]
        b1, b2 = await connect("bob-token"), await connect("bob-token")
        assert (await a1.call("join", {"room": "one"}))["ok"]
        assert (await a2.call("join", {"room": "two"}))["ok"]
        reply = await a3.call("join", {"room": "three"})
        assert reply["error"]["code"] == "too_many_rooms"
        # joining a room someone else created is not creating one
        assert (await b1.call("join", {"room": "bobs"}))["ok"]
        assert (await a3.call("join", {"room": "bobs"}))["ok"]
        assert (await b2.call("join", {"room": "one"}))["ok"]
        # a room that ends (everyone left) no longer counts
        await a3.call("leave", {})
        await a2.call("leave", {})
        assert (await a2.call("join", {"room": "three"}))["ok"]
        assert server.service.rooms_created == {"test:alice": 2, "test:bob": 1}


# ------------------------------------------------------------------- names (item 8c)
@pytest.mark.parametrize(
    "bad",
    [
        "ana\u202egnp.exe",  # right-to-left override
        "an\u200ba",  # zero-width space
        "a\u2066na\u2069",  # isolates
        "\ufeffana",  # BOM
        "ana\x85",  # C1 control
        "a\u2028na",  # line separator
    ],
)
async def test_names_with_invisible_characters_are_refused(
    signal_server: RunningServer, bad: str
) -> None:
    client = signaling_client()
    try:
        await client.connect(signal_server.url, TOKEN)
        with pytest.raises(NameRefused) as refused:
            await client.join("r", bad, {})
        assert refused.value.code == "invalid_name"
        assert "U+" in str(refused.value)
        assert bad not in str(refused.value)
        joined = await client.join("r", "ana", {})
        assert joined.name == "ana"
    finally:
        await client.close()


async def test_names_are_unique_in_a_room_ignoring_case_and_width(
    signal_server: RunningServer,
) -> None:
    async with clients(signal_server.url) as connect:
        ana = await connect()
        assert (await ana.call("join", {"room": "r", "name": "Ana", "resumable": True}))["ok"]
        for twin in ("ana", "ANA", "\uff21\uff4e\uff41", "\uff41\uff4e\uff41", " ana "):
            reply = await (await connect()).call("join", {"room": "r", "name": twin})
            assert reply["error"]["code"] == "name_taken", twin
        elsewhere = await connect()
        assert (await elsewhere.call("join", {"room": "other", "name": "ana"}))["ok"]
        ben = await connect()
        assert (await ben.call("join", {"room": "r", "name": "Ben"}))["ok"]
        # the app raises the precise exception and stays usable
        app = await P2PApp.connect(signal_server.url, TOKEN, thread=False)
        try:
            with pytest.raises(NameRefused, match="already uses this name") as refused:
                await app.join_room("r", name="ben")
            assert refused.value.code == "name_taken"
            assert app.room is None
            assert await app.join_room("r", name="ben 2")
        finally:
            await app.disconnect()


async def test_away_member_keeps_its_name_against_others_only() -> None:
    """A dropped member still shows its name: a different identity cannot take it
    during the grace period; the same identity (a restarted kernel) can, and the
    old slot leaves at once."""
    async with (
        two_identity_server(ServerLimits(resume_grace=30)) as server,
        clients(server.url) as connect,
    ):
        alice = await connect("alice-token")
        watcher = await connect("bob-token")
        left: asyncio.Queue[Any] = asyncio.Queue()
        watcher.on("peer_left", left.put_nowait)
        first = await alice.call("join", {"room": "r", "name": "alice", "resumable": True})
        await watcher.call("join", {"room": "r", "name": "watch"})
        await drop(alice)
        bob = await connect("bob-token")
        reply = await bob.call("join", {"room": "r", "name": "Alice"})
        assert reply["error"]["code"] == "name_taken"
        assert left.empty()
        restarted = await connect("alice-token")
        reply = await restarted.call("join", {"room": "r", "name": "alice"})
        assert reply["ok"]
        assert reply["peer_id"] != first["peer_id"]
        ev = await asyncio.wait_for(left.get(), 5)
        assert ev["peer_id"] == first["peer_id"]
        assert [p["name"] for p in reply["peers"]] == ["watch"]


# ------------------------------------------------------------------ auth model (item 4)
def test_authority_turns_credentials_into_identities() -> None:
    tokened = Authority(token="s3cret")
    who = tokened.identify(Credentials(token="s3cret"))
    assert who.kind == "token"
    assert "s3cret" not in who.key
    assert who.may_enter("any-room")
    with pytest.raises(AuthRefused, match="wrong token"):
        tokened.identify(Credentials(token="guess"))
    with pytest.raises(AuthRefused, match="no token"):
        tokened.identify(Credentials())
    jupyter = Authority(trust_host_user=True)
    assert jupyter.identify(Credentials(host_user="ana")) == Identity("jupyter", "ana")
    with pytest.raises(AuthRefused):
        jupyter.identify(Credentials(token="s3cret"))
    assert Authority(anonymous=True).identify(Credentials()).kind == "anonymous"
    with pytest.raises(ValueError, match="needs"):
        Authority()
    scoped = Identity("invite", "x", rooms=frozenset({"r1"}))
    assert scoped.may_enter("r1")
    assert not scoped.may_enter("r2")


async def test_scoped_identity_enters_only_its_rooms() -> None:
    async def authenticate(environ: dict[str, Any], auth: Any) -> Identity:
        return Identity("test", "scoped", rooms=frozenset({"allowed"}))

    service = SignalingService(async_mode="aiohttp", authenticate=authenticate)
    app = web.Application()
    service.sio.attach(app, socketio_path=SOCKETIO_PATH)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with clients(f"http://127.0.0.1:{runner.addresses[0][1]}/") as connect:
            sio = await connect()
            assert (await sio.call("join", {"room": "other"}))["error"]["code"] == "forbidden_room"
            assert (await sio.call("join", {"room": "allowed"}))["ok"]
    finally:
        await runner.cleanup()


# --------------------------------------------------------- secrets in errors and logs (item 7)
SECRET = "5ec7e75ec7e75ec7e75ec7e75ec7e7ab"
TURN_PASSWORD = "turn-password-do-not-print"


@asynccontextmanager
async def hostile_server(reply: Any) -> AsyncIterator[str]:
    """A signaling server that answers every join with ``reply``."""
    sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: Any) -> Any:
        return reply

    app = web.Application()
    sio.attach(app, socketio_path=SOCKETIO_PATH)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


TURN = {"urls": ["turn:127.0.0.1:3478"], "username": "1:peer", "credential": TURN_PASSWORD}


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        (
            {"ok": True, "peer_id": 5, "peers": [], "resume_secret": SECRET, "ice_servers": [TURN]},
            "'peer_id' is a int",
        ),
        (
            {
                "ok": True,
                "peer_id": "a" * 16,
                "peers": [],
                "resume_secret": SECRET,
                "ice_servers": [TURN, {**TURN, "urls": ["ftp://x"]}],
            },
            "ice server #1",
        ),
        (
            {"ok": True, "peer_id": "a" * 16, "peers": [], "ice_servers": {"c": TURN_PASSWORD}},
            "'ice_servers' is a dict",
        ),
        (f"resume_secret={SECRET} credential={TURN_PASSWORD}", "a str, not an object"),
        (
            {"ok": True, "peer_id": "a" * 16, "peers": [{"secret": SECRET}], "ice_servers": []},
            "no string 'peer_id'",
        ),
    ],
    ids=["bad-peer-id", "bad-ice-server", "bad-ice-list", "not-an-object", "bad-peer"],
)
async def test_malformed_join_reply_error_holds_no_secret(reply: Any, what: str) -> None:
    async with hostile_server(reply) as url:
        client = signaling_client()
        try:
            await client.connect(url, None)
            with pytest.raises(SignalingError) as exc:
                await client.join("r", "me", {})
        finally:
            await client.close()
    text = str(exc.value)
    assert exc.value.code == "bad_reply"
    assert what in text
    assert SECRET not in text
    assert TURN_PASSWORD not in text


async def test_access_log_never_holds_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    app, _service = create_app(TOKEN)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}p2p/health?token={TOKEN}&x=1") as resp,
        ):
            assert resp.status == 200
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        await sio.connect(
            url + f"?token={TOKEN}", transports=["websocket"], socketio_path=SOCKETIO_PATH
        )
        assert (await sio.call("join", {"room": "q"}))["ok"]
        await sio.disconnect()
    finally:
        await runner.cleanup()
    records = [r for r in caplog.records if r.name == "aiohttp.access"]
    lines = [r.getMessage() for r in records]
    assert any("/p2p/health?token=REDACTED&x=REDACTED" in line for line in lines), lines
    assert any("/p2p/socket.io/" in line and "transport=websocket" in line for line in lines)
    for record in records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(vars(record))


async def test_cli_logs_and_prints_no_token_url() -> None:
    """The command users run: its access log (stderr) and banner (stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2p_nb.server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--token",
        TOKEN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = first.rsplit(" ", 1)[1].strip()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}p2p/health?token={TOKEN}") as resp,
        ):
            assert resp.status == 200
    finally:
        await stop_process(proc)
    banner = first + (await proc.stdout.read()).decode()
    log = (await proc.stderr.read()).decode()
    assert "GET /p2p/health?token=REDACTED" in log
    assert TOKEN not in log
    # Only the web client's address carries the token in a URL (issue 13: as
    # Jupyter prints its own); the page takes it out of the address bar and
    # its history before anything else, and the access log above redacts it.
    with_token = [line for line in banner.splitlines() if "?token=" in line]
    assert with_token == [f"    in a browser: {url}?token={TOKEN}"]
    assert f"Authorization: token {TOKEN}" in banner
