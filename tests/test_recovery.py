"""Recovery on real parts: cut links, a restarted signaling server, and the
relayed fallback between two network namespaces whose UDP is dropped."""

from __future__ import annotations

import asyncio
import contextlib
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

from p2p_nb import protocol
from p2p_nb.app import CustomMessage, P2PApp
from p2p_nb.links import MeshSettings, ReconnectPolicy

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
    inbox = b.events("message")
    await a.send_message("before")
    assert (await inbox.get(timeout=10)).data.text == "before"
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


async def test_messages_the_channel_took_before_a_cut_arrive_once_after_it(
    make_peer: MakePeer,
) -> None:
    """What the old data channel held when the link failed is sent again, first,
    when it re-opens; the receiver drops what it already had (by seq)."""
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    link = a._mesh.links[b.peer_id or ""]  # type: ignore[union-attr]
    inbox = b.events("message")
    reconnected = a.events("peer_connected")
    sent = []
    for i in range(200):
        sent.append(await a.send_message(f"in flight {i}"))
        if i % 20 == 19:
            await asyncio.sleep(0)  # let batches reach the channel, as a busy sender's would
    assert link.out.unacked, "nothing in flight: the test would prove nothing"
    await link.cut()
    assert (await reconnected.get(timeout=20)).peer_id == b.peer_id
    got = [(await inbox.get(timeout=10)).data for _ in sent]
    assert [m.seq for m in got] == [m.seq for m in sent]
    assert [m.text for m in got] == [m.text for m in sent]
    with pytest.raises(TimeoutError):  # nothing twice
        await inbox.get(timeout=0.5)
    await a.send_message("after")
    assert (await inbox.get(timeout=10)).data.text == "after"
    async with asyncio.timeout(5):  # b's chat-acks let a forget its copies
        while link.out.unacked:
            await link._wake.wait()  # set by every ack


async def test_custom_messages_the_channel_took_before_a_cut_arrive_once_after_it(
    make_peer: MakePeer,
) -> None:
    """Application messages get chat's delivery: acknowledged, sent again."""
    a = await make_peer("a")
    b = await make_peer("b")
    await wait_mesh([a, b])
    got: list[int] = []
    arrived = asyncio.Event()

    def on_vote(message: CustomMessage) -> None:
        got.append(message.payload["n"])
        assert "seq" not in message.payload
        if len(got) == 100:
            arrived.set()

    b.register_handler("vote", on_vote)
    link = a._mesh.links[b.peer_id or ""]  # type: ignore[union-attr]
    for n in range(100):
        await a.send_custom("vote", {"n": n})
        if n % 20 == 19:
            await asyncio.sleep(0)  # one loop turn: the batch goes to the channel
    assert link.out.unacked, "nothing in flight: the test would prove nothing"
    await link.cut()
    await asyncio.wait_for(arrived.wait(), 20)
    inbox = b.events("message")
    await a.send_message("after")  # on the same ordered channel as any duplicate
    assert (await inbox.get(timeout=10)).data.text == "after"
    assert got == list(range(100))


async def test_messages_queued_for_a_peer_that_leaves_are_reported_undelivered(
    make_peer: MakePeer,
) -> None:
    slow = MeshSettings(reconnect=ReconnectPolicy(base_delay=30.0, max_delay=30.0))
    a = await make_peer("a", mesh_settings=slow)
    b = await make_peer("b", mesh_settings=slow)
    await wait_mesh([a, b])
    undelivered = a.events("undelivered")
    states = a.events("peer_reconnecting")
    await a._mesh.links[b.peer_id or ""].cut()  # type: ignore[union-attr]
    await states.get(timeout=10)  # down, and no retry for 30 s
    queued = [await a.send_message(f"never sent {i}") for i in range(3)]
    b_id = b.peer_id
    await b.leave_room()
    ev = await undelivered.get(timeout=10)
    assert ev.peer_id == b_id
    assert ev.data["name"] == "b"
    assert [(m.text, m.seq, m.sender) for m in ev.data["messages"]] == [
        (m.text, m.seq, a.peer_id) for m in queued
    ]
    assert ev.data["other_frames"] == 0
    assert all(isinstance(m, protocol.ChatMessage) for m in ev.data["unconfirmed"])


async def test_signaling_server_restart_is_survived(tmp_path: Path) -> None:
    # ids survive a restart only where the operator keeps the resume key
    keep = ("--resume-key-file", str(tmp_path / "resume.key"))
    server = await spawn_signal_server("--resume-grace", "5", *keep)
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

        restarted = await spawn_signal_server("--port", port, "--resume-grace", "5", *keep)
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


def skip_without_netns_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool!r} (Debian: iproute2, nftables; see scripts/setup.sh)")


@pytest.fixture
async def udp_blocked() -> AsyncIterator[Namespaces]:
    """Two network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2);
    TCP passes, every UDP packet between them is dropped (nftables)."""
    skip_without_netns_tools()
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


@dataclass
class Triangle:
    a: str
    b: str
    r: str


@pytest.fixture
async def udp_blocked_but_r() -> AsyncIterator[Triangle]:
    """Three network namespaces: ``r`` is joined to ``a`` (10.77.1.2 <-> 10.77.1.1)
    and to ``b`` (10.77.2.2 <-> 10.77.2.1) by veth pairs and routes between them;
    it drops every UDP packet it would forward, so a and b reach each other over
    TCP only, while both reach r over UDP and TCP."""
    skip_without_netns_tools()
    tag = uuid.uuid4().hex[:6]
    ns = Triangle(f"p2pnb-a-{tag}", f"p2pnb-b-{tag}", f"p2pnb-r-{tag}")
    rc, out = await sh("ip", "netns", "add", ns.r)
    if rc:
        pytest.skip(f"cannot create a network namespace here: {out.strip()}")
    try:
        await sh("ip", "netns", "add", ns.a)
        await sh("ip", "netns", "add", ns.b)
        script = [
            ("ip", "netns", "exec", ns.r, "ip", "link", "set", "lo", "up"),
            ("ip", "netns", "exec", ns.r, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
            ("ip", "netns", "exec", ns.r, "nft", "add", "table", "inet", "p2pnb"),
            ("ip", "netns", "exec", ns.r, "nft", "add", "chain", "inet", "p2pnb", "routed",
             "{ type filter hook forward priority 0; }"),
            ("ip", "netns", "exec", ns.r, "nft", "add", "rule", "inet", "p2pnb", "routed",
             "meta", "l4proto", "udp", "drop"),
        ]  # fmt: skip
        for name, net in ((ns.a, 1), (ns.b, 2)):
            here, there = f"vr{name[6]}", f"v{name[6]}r"  # veth ends: vra/var, vrb/vbr
            script += [
                ("ip", "netns", "exec", ns.r, "ip", "link", "add", here, "type", "veth", "peer",
                 "name", there, "netns", name),
                ("ip", "netns", "exec", ns.r, "ip", "addr", "add", f"10.77.{net}.1/24", "dev",
                 here),
                ("ip", "netns", "exec", ns.r, "ip", "link", "set", here, "up"),
                ("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"),
                ("ip", "netns", "exec", name, "ip", "addr", "add", f"10.77.{net}.2/24", "dev",
                 there),
                ("ip", "netns", "exec", name, "ip", "link", "set", there, "up"),
                ("ip", "netns", "exec", name, "ip", "route", "add", "default", "via",
                 f"10.77.{net}.1"),
            ]  # fmt: skip
        for argv in script:
            rc, out = await sh(*argv)
            assert rc == 0, f"{' '.join(argv)}: {out}"
        yield ns
    finally:
        for name in (ns.a, ns.b, ns.r):
            await sh("ip", "netns", "del", name)


class NsPeer:
    """tests/relay_peer.py in a namespace; its stdout lines are its events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(
        cls, ns: str, url: str, token: str, name: str, downloads: Path, services: str = ""
    ) -> NsPeer:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, "-m", "tests.relay_peer",
            url, token, "room1", name, str(downloads), *([services] if services else []),
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


RELAY_TOKEN = "relay-test-token"


async def start_in(
    ns: str, url: str, name: str, downloads: Path, peers: list[NsPeer], services: str = ""
) -> tuple[NsPeer, str]:
    """``name`` in ``ns``, joined (and added to ``peers``, for the caller to
    stop); returns it and its peer id."""
    peer = await NsPeer.start(ns, url, RELAY_TOKEN, name, downloads, services)
    peers.append(peer)
    return peer, (await peer.expect("READY"))[1]


async def ana_and_ben(
    ns_a: str, ns_b: str, url: str, tmp_path: Path, peers: list[NsPeer]
) -> tuple[NsPeer, NsPeer, str, str]:
    """ "ana" in ``ns_a`` and "ben" in ``ns_b`` (see :func:`start_in`)."""
    a, id_a = await start_in(ns_a, url, "ana", tmp_path / "a", peers)
    b, id_b = await start_in(ns_b, url, "ben", tmp_path / "b", peers)
    return a, b, id_a, id_b


async def file_crosses(source: NsPeer, receiver: NsPeer, src: Path, downloads: Path) -> None:
    """``source`` shares ``src`` (300 kB of random bytes); it arrives intact in
    ``receiver``'s ``downloads``."""
    src.write_bytes(os.urandom(300_000))
    await source.command(f"share {src}")
    _, name, digest = (await receiver.expect("FILE", timeout=60))[:3]
    assert name == src.name
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (downloads / src.name).read_bytes() == src.read_bytes()


async def stop_all(peers: list[NsPeer], server: asyncio.subprocess.Process) -> None:
    for peer in peers:
        await peer.stop()
    await stop_process(server)


async def ns_server(
    namespace: str, host: str, *extra: str
) -> tuple[asyncio.subprocess.Process, str]:
    """``p2p-nb-signal`` inside ``namespace`` on ``host``:4000; returns it and its URL."""
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, "-m", "p2p_nb.server",
        "--host", host, "--port", "4000", "--token", RELAY_TOKEN, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        banner = (await asyncio.wait_for(server.stdout.readline(), 30)).decode()
        url = banner.rsplit(" ", 1)[1].strip()
        assert url == f"http://{host}:4000/"
    except BaseException:
        await stop_process(server)
        raise
    return server, url


async def test_relayed_fallback_when_udp_is_blocked(
    udp_blocked: Namespaces, tmp_path: Path
) -> None:
    ns = udp_blocked
    server, url = await ns_server(ns.a, "10.77.0.1")
    peers: list[NsPeer] = []
    try:
        a, b, id_a, id_b = await ana_and_ben(ns.a, ns.b, url, tmp_path, peers)
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

        await file_crosses(a, b, tmp_path / "data.bin", tmp_path / "b")
    finally:
        await stop_all(peers, server)


async def test_relayed_through_a_peer_offering_relay(
    udp_blocked_but_r: Triangle, tmp_path: Path
) -> None:
    """a and b cannot open a direct link; r offers the ``relay`` service and has
    direct links to both, and the server relays nothing (``--no-relay``): every
    a<->b frame goes through r, in order, and both show the link ``relayed``."""
    ns = udp_blocked_but_r
    server, url = await ns_server(ns.r, "10.77.1.1", "--no-relay")
    peers: list[NsPeer] = []
    try:
        services = "messaging,file_transfer,relay"
        r, id_r = await start_in(ns.r, url, "rey", tmp_path / "r", peers, services)
        a, b, id_a, id_b = await ana_and_ben(ns.a, ns.b, url, tmp_path, peers)
        # no direct path and no server relay: after the failed ICE attempt, r relays
        for peer, other in ((a, id_b), (b, id_a)):
            state = await peer.expect(f"STATE {other} relayed", timeout=60)
            assert state[3] == "relay"
            route = await peer.expect(f"ROUTE {other}")
            assert route[2] == id_r
            assert not any(f"STATE {other} connected" in line for line in peer.lines)
            # ... while its own link to r is direct
            assert any(line == f"STATE {id_r} connected direct" for line in peer.lines)

        for i in range(30):
            await a.command(f"send from-a {i}")
        for i in range(5):
            await b.command(f"send from-b {i}")
        got: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for _ in range(30):
            _, sender, seq, text = await b.expect("MSG")
            got[sender].append((int(seq), text))
        assert got == {id_a: [(i + 1, f"from-a {i}") for i in range(30)]}
        back = [(await a.expect("MSG"))[1:] for _ in range(5)]
        assert back == [[id_b, str(i + 1), f"from-b {i}"] for i in range(5)]

        for source, receiver, name in ((a, b, "b"), (b, a, "a")):
            await file_crosses(source, receiver, tmp_path / f"to-{name}.bin", tmp_path / name)
        with contextlib.suppress(TimeoutError):  # read what r printed so far
            await r.expect("(nothing)", timeout=1)
        assert f"STATE {id_a} connected direct" in r.lines
        assert f"STATE {id_b} connected direct" in r.lines
    finally:
        await stop_all(peers, server)


async def test_relay_peer_gone_falls_back_to_the_signaling_relay(
    udp_blocked_but_r: Triangle, tmp_path: Path
) -> None:
    """A peer offering ``relay`` is preferred to the server's relay; when it goes
    away, the link moves to the signaling relay and messages flow again."""
    ns = udp_blocked_but_r
    server, url = await ns_server(ns.r, "10.77.1.1")
    peers: list[NsPeer] = []
    try:
        r, id_r = await start_in(ns.r, url, "rey", tmp_path / "r", peers, "messaging,relay")
        a, b, id_a, id_b = await ana_and_ben(ns.a, ns.b, url, tmp_path, peers)
        for peer, other in ((a, id_b), (b, id_a)):
            await peer.expect(f"STATE {other} relayed", timeout=60)
            assert (await peer.expect(f"ROUTE {other}"))[2] == id_r
        await a.command("send through r")
        assert (await b.expect("MSG"))[1:] == [id_a, "1", "through r"]

        await r.stop()  # gone without a goodbye: the links to it time out
        for peer, other in ((a, id_b), (b, id_a)):
            await peer.expect(f"ROUTE {other} server", timeout=90)
        for i in range(10):
            await a.command(f"send through the server {i}")
        got = [(await b.expect("MSG"))[1:] for _ in range(10)]
        assert got == [[id_a, str(i + 2), f"through the server {i}"] for i in range(10)]
        await b.command("send back")
        assert (await a.expect("MSG"))[1:] == [id_b, "1", "back"]
    finally:
        await stop_all(peers, server)
