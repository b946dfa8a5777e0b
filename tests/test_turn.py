"""TURN: the signaling server hands out coturn credentials; a real coturn
relays the data channel when it is the only path; bad credentials are reported."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from p2p_nb import SignalingError, TurnError
from p2p_nb.app import P2PApp
from p2p_nb.server.__main__ import build_parser, turn_server
from p2p_nb.signaling import _ice_servers
from p2p_nb.turn import TurnServer

from .conftest import joined, start_server, stop_process
from .test_mesh import wait_mesh
from .test_recovery import (  # noqa: F401 (udp_blocked_but_r is a fixture)
    NsPeer,
    Triangle,
    ana_and_ben,
    file_crosses,
    ns_server,
    stop_all,
    udp_blocked_but_r,
)

pytestmark = pytest.mark.anyio

SECRET = "turn-test-secret"
PORT = 34780


@asynccontextmanager
async def coturn(host: str, tmp: Path, netns: str | None = None) -> AsyncIterator[str]:
    """A real coturn (``--use-auth-secret``) on ``host``; yields its TURN URL."""
    binary = shutil.which("turnserver")
    assert binary, "coturn's turnserver is missing (Debian: coturn; scripts/setup.sh installs it)"
    argv = [
        binary, "-n", f"--listening-ip={host}", f"--relay-ip={host}",
        f"--listening-port={PORT}", "--min-port=49160", "--max-port=49400",
        "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=p2p-nb.test",
        "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
        "--log-file=stdout", "--simple-log", f"--pidfile={tmp / 'turnserver.pid'}",
        f"--userdb={tmp / 'turndb'}",
    ]  # fmt: skip
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while "Total General servers" not in (seen or [""])[-1]:
                line = await proc.stdout.readline()
                assert line, f"turnserver exited: {seen[-5:]}"
                seen.append(line.decode(errors="replace"))
        yield f"turn:{host}:{PORT}"
    finally:
        await stop_process(proc)


def relay_candidates(app: P2PApp, other: P2PApp) -> list[str]:
    link = app._mesh.links[other.peer_id or ""]  # type: ignore[union-attr]
    assert link.pc is not None
    assert link.pc.localDescription is not None
    return [x for x in link.pc.localDescription.sdp.splitlines() if " typ relay" in x]


async def test_peers_get_turn_credentials_from_the_signaling_server(tmp_path: Path) -> None:
    async with coturn("127.0.0.2", tmp_path) as url:
        server = await start_server(turn=TurnServer((url,), SECRET))
        try:
            async with joined(server, "ana", "ben") as apps:
                a, b = apps
                await wait_mesh(apps)
                for app, other in ((a, b), (b, a)):
                    given = [s for s in app._mesh.ice_servers if s.urls == [url]]  # type: ignore[union-attr]
                    assert given
                    assert given[0].username.endswith(f":{app.peer_id}")
                    # coturn accepted the credentials: gathering got a relay address from it
                    assert relay_candidates(app, other)
                    # ... and a direct path, when there is one, is preferred
                    assert app.connection_status(other.peer_id or "").ice_route == "host"
                inbox = b.events("message")
                await a.send_message("hello over a link that could use TURN")
                assert (await inbox.get(timeout=10)).data.text.startswith("hello")
        finally:
            await server.stop()


async def test_a_wrong_turn_secret_is_reported_and_direct_links_still_work(
    tmp_path: Path,
) -> None:
    async with coturn("127.0.0.2", tmp_path) as url:
        server = await start_server(turn=TurnServer((url,), "not-the-secret"))
        apps: list[P2PApp] = []
        try:
            errors = []
            for name in ("ana", "ben"):
                app = await P2PApp.connect(server.url, server.token, thread=False)
                apps.append(app)
                errors.append(app.events("error"))
                await app.join_room("room1", name=name)
            await wait_mesh(apps)
            for app, other, stream in (
                (apps[0], apps[1], errors[0]),
                (apps[1], apps[0], errors[1]),
            ):
                ev = await stream.get(timeout=10)
                assert isinstance(ev.data, TurnError)
                assert url in str(ev.data)
                assert not relay_candidates(app, other)
                assert app.connection_status(other.peer_id or "").state == "connected"
        finally:
            for app in apps:
                await app.disconnect()
            await server.stop()


async def test_turn_carries_the_link_when_nothing_else_can(
    udp_blocked_but_r: Triangle,  # noqa: F811
    tmp_path: Path,
) -> None:
    """a and b cannot exchange UDP and nothing relays for them (``--no-relay``,
    no relay peer); both reach the coturn in r. The link opens as a WebRTC data
    channel through TURN, and chat and files cross it."""
    ns = udp_blocked_but_r
    async with coturn("10.77.1.1", tmp_path, netns=ns.r) as turn_url:
        server, url = await ns_server(
            ns.r, "10.77.1.1", "--no-relay", "--turn-url", turn_url, "--turn-secret", SECRET
        )
        peers: list[NsPeer] = []
        try:
            a, b, id_a, id_b = await ana_and_ben(ns.a, ns.b, url, tmp_path, peers)
            for peer, other in ((a, id_b), (b, id_a)):
                await peer.expect(f"STATE {other} connected direct", timeout=60)
                assert (await peer.expect(f"ICE {other}"))[2] == "relay"
            await a.command("send through turn")
            _, sender, _, text = await b.expect("MSG")
            assert (sender, text) == (id_a, "through turn")
            await file_crosses(a, b, tmp_path / "data.bin", tmp_path / "b")
        finally:
            await stop_all(peers, server)


def test_credentials_follow_coturns_scheme() -> None:
    turn = TurnServer(("turn:turn.example:3478",), "s3cret", ttl=600)
    cred = turn.credentials("peer1", now=1_000_000)
    assert cred["username"] == "1000600:peer1"
    mac = hmac.new(b"s3cret", b"1000600:peer1", hashlib.sha1).digest()
    assert base64.b64decode(cred["credential"]) == mac
    with pytest.raises(ValueError, match="turn:"):
        TurnServer(("stun:x:3478",), "s")
    with pytest.raises(ValueError, match="secret"):
        TurnServer(("turn:x:3478",), "")


def test_the_cli_wants_a_secret_with_a_turn_url() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit, match="needs --turn-secret"):
        turn_server(parser.parse_args(["--turn-url", "turn:x:3478"]))
    with pytest.raises(SystemExit, match="needs --turn-url"):
        turn_server(parser.parse_args(["--turn-secret", "s"]))
    made = turn_server(parser.parse_args(["--turn-url", "turn:x:1", "--turn-secret", "s"]))
    assert made == TurnServer(("turn:x:1",), "s")


def test_a_malformed_ice_server_in_the_join_reply_is_a_signaling_error() -> None:
    good = {"urls": "turn:x:3478", "username": "1:p", "credential": "c"}
    assert _ice_servers([good]) == [good]
    for bad in (
        "turn:x:3478",
        [{"urls": "http://x"}],
        [{"urls": []}],
        [{"urls": ["turn:x:1"], "credential": 5}],
        [None],
    ):
        with pytest.raises(SignalingError, match="malformed join reply"):
            _ice_servers(bad)
