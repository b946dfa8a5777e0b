"""Recovery on real parts: cut links, a restarted signaling server, and the
relayed fallback between two network namespaces whose UDP is dropped."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from p2p_nb.app import P2PApp

from .conftest import MakePeer, ServerProcess, spawn_signal_server, stop_process
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

ROOT = os.path.dirname(os.path.dirname(__file__))


async def test_cut_link_comes_back_and_queued_messages_arrive_in_order(
    make_peer: MakePeer,
) -> None:
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    await a.send_message("before")
    inbox = b.events("message")
    states = a.events("peer_reconnecting", "peer_connected")
    await a._mesh.links[b.peer_id or ""].cut()  # type: ignore[union-attr]
    ev = await states.get(timeout=10)
    assert (ev.name, ev.peer_id) == ("peer_reconnecting", b.peer_id)
    # the link is down: these wait in the outbox, in order
    sent = [await a.send_message(f"queued {i}") for i in range(20)]
    status = a.connection_status(b.peer_id or "")
    assert status.state == "reconnecting"
    assert status.queued == 20
    ev = await states.wait_for("peer_connected", timeout=20)
    assert ev.peer_id == b.peer_id
    got = [(await inbox.get(timeout=10)).data for _ in range(20)]
    assert [m.text for m in got] == [m.text for m in sent]
    assert [m.seq for m in got] == [m.seq for m in sent]
    with pytest.raises(TimeoutError):  # nothing more: no duplicates
        await inbox.get(timeout=0.5)
    assert a.connection_status(b.peer_id or "").reconnects == 1
    assert a.connection_status(b.peer_id or "").queued == 0


async def test_signaling_server_restart_is_survived() -> None:
    server = await spawn_signal_server("--resume-grace", "5")
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    apps: list[P2PApp] = []
    restarted: ServerProcess | None = None
    try:
        for name in ("a", "b", "c"):
            app = await P2PApp.connect(server.url, server.token, thread=False)
            await app.join_room("room1", name=name)
            apps.append(app)
        await wait_mesh(apps)
        ids = [app.peer_id for app in apps]
        presence = [app.events("peer_joined", "peer_left") for app in apps]
        lost = [app.events("signaling_lost") for app in apps]
        restored = [app.events("signaling_restored") for app in apps]
        inboxes = [app.events("message") for app in apps]

        await stop_process(server.process)
        for stream in lost:
            await stream.wait_for("signaling_lost", timeout=10)
        # chat goes on over the peer links while there is no server at all
        await apps[0].send_message("during the outage")
        for inbox in inboxes[1:]:
            assert (await inbox.get(timeout=10)).data.text == "during the outage"

        restarted = await spawn_signal_server("--port", port, "--resume-grace", "5")
        assert restarted.url == server.url
        for stream in restored:
            ev = await stream.wait_for("signaling_restored", timeout=30)
            assert ev.data == {"resumed": True, "room": "room1"}
        assert [app.peer_id for app in apps] == ids
        async with (
            aiohttp.ClientSession() as http,
            http.get(restarted.url + "p2p/health") as resp,
        ):
            health = await resp.json()
        assert health["peers"] == 3
        assert health["rooms"] == 1

        await apps[1].send_message("after the restart")
        for i in (0, 2):
            assert (await inboxes[i].get(timeout=10)).data.text == "after the restart"
        # the signaling path works again: a newcomer meets all three
        late = await P2PApp.connect(restarted.url, restarted.token, thread=False)
        apps.append(late)
        await late.join_room("room1", name="late")
        await wait_mesh(apps)
        assert sorted(late.peers) == sorted(i or "" for i in ids)
        # nobody ever saw anybody leave or (re)join, except the newcomer
        for stream in presence:
            seen = [(e.name, e.peer_id) for e in stream.drain()]
            assert seen == [("peer_joined", late.peer_id)]
        for app in apps[:3]:
            assert sorted(app.peers) == sorted(
                i or "" for i in [*ids, late.peer_id] if i != app.peer_id
            )
    finally:
        for app in apps:
            await app.disconnect()
        await stop_process(server.process)
        if restarted is not None:
            await stop_process(restarted.process)


async def test_dropped_signaling_connection_resumes_within_grace(
    make_peer: MakePeer,
) -> None:
    """The server stays up; only one client's socket drops. It rejoins into its
    held slot: the others see neither peer_left nor peer_joined."""
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    presence = a.events("peer_left", "peer_joined")
    restored = b.events("signaling_restored")
    await b._signaling._sio.eio.disconnect(abort=True)  # type: ignore[union-attr]
    ev = await restored.wait_for("signaling_restored", timeout=20)
    assert ev.data["resumed"] is True
    assert presence.drain() == []
    c = await make_peer("c")
    await wait_mesh([a, b, c])
    assert [e.name for e in presence.drain()] == ["peer_joined"]


# --------------------------------------------------------------- relay (netns)
@dataclass
class Namespaces:
    a: str
    b: str


async def sh(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.fixture
async def udp_blocked() -> AsyncIterator[Namespaces]:
    """Two network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2);
    TCP passes, every UDP packet between them is dropped (nftables)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool!r} (Debian: iproute2, nftables; see scripts/setup.sh)")
    tag = uuid.uuid4().hex[:6]
    ns = Namespaces(f"p2pnb-a-{tag}", f"p2pnb-b-{tag}")
    rc, out = await sh("ip", "netns", "add", ns.a)
    if rc:
        pytest.skip(f"cannot create a network namespace here: {out.strip()}")
    try:
        await sh("ip", "netns", "add", ns.b)
        script = [
            ("ip", "netns", "exec", ns.a, "ip", "link", "add", "va", "type", "veth", "peer",
             "name", "vb", "netns", ns.b),
            ("ip", "netns", "exec", ns.a, "ip", "addr", "add", "10.77.0.1/24", "dev", "va"),
            ("ip", "netns", "exec", ns.b, "ip", "addr", "add", "10.77.0.2/24", "dev", "vb"),
        ]  # fmt: skip
        for name, dev in ((ns.a, "va"), (ns.b, "vb")):
            script += [
                ("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"),
                ("ip", "netns", "exec", name, "ip", "link", "set", dev, "up"),
                ("ip", "netns", "exec", name, "nft", "add", "table", "inet", "p2pnb"),
            ]
            for chain, hook, iface in (("in", "input", "iifname"), ("out", "output", "oifname")):
                script += [
                    ("ip", "netns", "exec", name, "nft", "add", "chain", "inet", "p2pnb", chain,
                     f"{{ type filter hook {hook} priority 0; }}"),
                    ("ip", "netns", "exec", name, "nft", "add", "rule", "inet", "p2pnb", chain,
                     iface, dev, "meta", "l4proto", "udp", "drop"),
                ]  # fmt: skip
        for argv in script:
            rc, out = await sh(*argv)
            assert rc == 0, f"{' '.join(argv)}: {out}"
        yield ns
    finally:
        await sh("ip", "netns", "del", ns.a)
        await sh("ip", "netns", "del", ns.b)


class NsPeer:
    """tests/relay_peer.py in a namespace; its stdout lines are its events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, ns: str, url: str, token: str, name: str, downloads: Path) -> NsPeer:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, "-m", "tests.relay_peer",
            url, token, "room1", name, str(downloads),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        return cls(proc)

    async def expect(self, prefix: str, timeout: float = 30) -> list[str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"peer exited; it printed {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line.split(" ", 3)

    async def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def test_relayed_fallback_when_udp_is_blocked(
    udp_blocked: Namespaces, tmp_path: Path
) -> None:
    ns = udp_blocked
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.a, sys.executable, "-m", "p2p_nb.server",
        "--host", "10.77.0.1", "--port", "4000", "--token", "relay-test-token",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    peers: list[NsPeer] = []
    try:
        assert server.stdout is not None
        banner = (await asyncio.wait_for(server.stdout.readline(), 30)).decode()
        url = banner.rsplit(" ", 1)[1].strip()
        assert url == "http://10.77.0.1:4000/"
        a = await NsPeer.start(ns.a, url, "relay-test-token", "ana", tmp_path / "a")
        peers.append(a)
        b = await NsPeer.start(ns.b, url, "relay-test-token", "ben", tmp_path / "b")
        peers.append(b)
        id_a = (await a.expect("READY"))[1]
        id_b = (await b.expect("READY"))[1]
        # no direct path: after the failed ICE attempt both sides relay
        state_a = await a.expect(f"STATE {id_b} relayed")
        state_b = await b.expect(f"STATE {id_a} relayed")
        assert state_a[3] == "relay"
        assert state_b[3] == "relay"
        assert not any(f"STATE {id_b} connected" in line for line in a.lines)

        for i in range(30):
            await a.command(f"send from-a {i}")
        await b.command("send from-b")
        got: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for _ in range(30):
            _, sender, seq, text = await b.expect("MSG")
            got[sender].append((int(seq), text))
        assert got == {id_a: [(i + 1, f"from-a {i}") for i in range(30)]}
        _, sender, _, text = await a.expect("MSG")
        assert (sender, text) == (id_b, "from-b")

        src = tmp_path / "data.bin"
        src.write_bytes(os.urandom(300_000))
        await a.command(f"share {src}")
        _, name, digest = (await b.expect("FILE", timeout=60))[:3]
        assert name == "data.bin"
        assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
        assert (tmp_path / "b" / "data.bin").read_bytes() == src.read_bytes()
    finally:
        for peer in peers:
            await peer.stop()
        await stop_process(server)
