"""Connection quality, liveness (ping/pong) and mesh validation on real links;
and the quarantine of aiortc's internals (the source of ``p2p_nb`` reaches
into aiortc and aioice only from ``p2p_nb/_aiortc/``)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import p2p_nb
from p2p_nb._aiortc.delayed_sack import DelayedSack
from p2p_nb._aiortc.loss_tolerant_window import LossTolerantWindow
from p2p_nb._aiortc.quick_transmit import QuickTransmit
from p2p_nb._aiortc.tail_loss_probe import TailLossProbe
from p2p_nb.app import P2PApp
from p2p_nb.mesh import MeshSettings, ReconnectPolicy
from p2p_nb.server import ServerLimits

from .conftest import RunningServer, start_server
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

FAST = MeshSettings(ping_interval=0.2, pong_timeout=1.5, quality_interval=0.3)

PACKAGE = Path(p2p_nb.__file__).parent
QUARANTINE = PACKAGE / "_aiortc"

SCTP_INTERNALS = sorted(
    {
        *TailLossProbe._NEEDS,
        *LossTolerantWindow._NEEDS,
        *QuickTransmit._NEEDS,
        *DelayedSack._NEEDS,
        "_send_sack",
    }
)
"""Every private member of aiortc's SCTP association the hooks use (their own
lists, so a new hook's needs are covered too)."""
ICE_INTERNALS = ["_connection", "_nominated", "_protocols"]
"""aioice's connection under a peer connection, its nominated pair, its sockets."""


def _private(name: str) -> str:
    """``name`` read as an attribute of anything but ``self`` (p2p_nb's own
    classes may have a ``self._loop``), or given as a string (``getattr``)."""
    return rf"(?<!\bself)\.{name}\b|['\"]{name}['\"]"


AIORTC_REACHES = {
    "an SCTP internal": "|".join(_private(re.escape(n)) for n in SCTP_INTERNALS),
    "aioice's connection": "|".join(_private(n) for n in ICE_INTERNALS),
    "a private member of pc.sctp": r"\.sctp\._\w",
    "the transport under a transport": r"\.transport\.transport\b",
    "a name-mangled aiortc member": r"_RTC\w*__\w+|__transmit\b|__certificates\b",
    "a hook kept on the association": r"_p2p_nb_\w+",
    "a module of the quarantine, not what it exports": (
        r"from\s+(?:p2p_nb)?\._aiortc\.\w+\s+import|import\s+p2p_nb\._aiortc\.\w+"
    ),
}
"""What reaching into aiortc's or aioice's internals looks like in source text."""


def aiortc_reaches(root: Path) -> list[str]:
    """``path:line: what: line`` for each line of a module of ``root`` outside
    ``root/_aiortc`` that reaches into aiortc's or aioice's internals."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "_aiortc"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            what = next((w for w, p in AIORTC_REACHES.items() if re.search(p, line)), None)
            if what is not None:
                found.append(f"{path.relative_to(root)}:{number}: {what}: {line.strip()}")
    return found


def test_only_the_quarantine_reaches_into_aiortc() -> None:
    """Every reach into aiortc's and aioice's private members lives in
    ``p2p_nb/_aiortc/``, where a new aiortc is checked in one place; the rest
    of ``p2p_nb`` imports only what the package exports."""
    assert QUARANTINE.is_dir()
    assert aiortc_reaches(PACKAGE) == []


@pytest.mark.parametrize(
    "line",
    [
        "srtt = pc.sctp._srtt",
        'srtt = getattr(pc.sctp, "_srtt", None)',
        "sctp = link.pc.sctp; sctp._cwnd = 1",
        "pc.sctp.transport.transport._connection._nominated[1]",
        "pc._RTCPeerConnection__certificates = [cert]",
        'probe = getattr(sctp, "_p2p_nb_tail_loss_probe")',
        "from ._aiortc.quick_transmit import QuickTransmit",
    ],
)
def test_the_quarantine_check_sees_a_reach(tmp_path: Path, line: str) -> None:
    """The check above would fail if a reach came back (its patterns match
    each way one was written before the quarantine)."""
    (tmp_path / "_aiortc").mkdir()
    (tmp_path / "_aiortc" / "allowed.py").write_text(line + "\n")
    (tmp_path / "ok.py").write_text("self._loop = loop\nself._connection = None\n")
    (tmp_path / "module.py").write_text(f"x = 1\n{line}\n")
    assert [r.split(":")[:2] for r in aiortc_reaches(tmp_path)] == [["module.py", "2"]]


@pytest.fixture
async def slow_leave_server() -> AsyncIterator[RunningServer]:
    """A server that keeps a dropped peer's slot for 60 s: only the mesh itself
    can notice a dead peer in time."""
    server = await start_server(limits=ServerLimits(resume_grace=60))
    yield server
    await server.stop()


async def connect(server: RunningServer, name: str, settings: MeshSettings = FAST) -> P2PApp:
    app = await P2PApp.connect(server.url, server.token, thread=False, mesh_settings=settings)
    await app.join_room("room1", name=name)
    return app


async def spawn_peer(server: RunningServer, name: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peer_process",
        server.url,
        server.token,
        "room1",
        name,
        stdout=asyncio.subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
    assert line[0] == "READY"
    return proc, line[1]


async def test_quality_measures_rtt_and_traffic(signal_server: RunningServer) -> None:
    a = await connect(signal_server, "a")
    b = await connect(signal_server, "b")
    try:
        await wait_mesh([a, b])
        quality = a.events("quality")
        ev = await quality.wait_for(
            "quality", lambda e: e.peer_id == b.peer_id and e.data.rtt is not None, timeout=10
        )
        q = ev.data
        assert q.state == "connected"
        assert q.transport == "direct"
        assert 0 < q.rtt < 1.0
        assert q.stats_rtt is None or 0 <= q.stats_rtt < 5
        assert q.connected_for is not None
        assert q.connected_for > 0
        assert q.messages_received > 0
        assert q.bytes_received > 0

        before_a = a.connection_quality(b.peer_id or "")
        before_b = b.connection_quality(a.peer_id or "")
        inbox = b.events("message")
        sent = await a.send_message("x" * 1000)
        await inbox.wait_for("message", lambda e: e.data.id == sent.id, timeout=10)
        after_a = a.connection_quality(b.peer_id or "")
        after_b = b.connection_quality(a.peer_id or "")
        assert after_a.bytes_sent - before_a.bytes_sent >= 1000
        assert after_a.messages_sent > before_a.messages_sent
        assert after_b.bytes_received - before_b.bytes_received >= 1000
        assert after_b.messages_received > before_b.messages_received
        assert set(a.all_connection_qualities()) == {b.peer_id}
        assert after_a.buffered >= 0
        assert after_a.queued == 0
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_validate_mesh_sees_every_pair_and_heals_ours(signal_server: RunningServer) -> None:
    once = MeshSettings(
        reconnect=ReconnectPolicy(max_attempts=0), ping_interval=0.2, pong_timeout=1.5
    )
    apps = [await connect(signal_server, n, once) for n in ("a", "b", "c")]
    a, b, c = apps
    try:
        await wait_mesh(apps)
        report = await a.validate_mesh()
        ids = sorted(app.peer_id or "" for app in apps)
        assert report.members == ids
        assert len(report.connected) == 3
        assert report.complete
        assert report.healing == []

        # cut a-b with no retries allowed: both ends give the link up
        lost = [a.events("peer_lost"), b.events("peer_lost")]
        await a._mesh.links[b.peer_id or ""].cut()  # type: ignore[union-attr]
        await lost[0].wait_for("peer_lost", timeout=10)
        await lost[1].wait_for("peer_lost", timeout=10)
        # c, which still has both links, sees the hole from what a and b report
        seen = await c.validate_mesh(heal=True)
        pair = tuple(sorted([a.peer_id or "", b.peer_id or ""]))
        assert pair in seen.missing
        assert seen.healing == []
        assert len(seen.connected) == 2
        # a heals it: the link it is part of is started again
        back = [a.events("peer_connected"), b.events("peer_connected")]
        fixed = await a.validate_mesh()
        assert pair in fixed.missing
        assert fixed.healing == [b.peer_id]
        for stream in back:
            await stream.wait_for("peer_connected", timeout=20)
        final = await c.validate_mesh()
        assert final.complete
        assert len(final.connected) == 3
    finally:
        for app in apps:
            await app.disconnect()


async def test_killed_peer_is_lost_by_pong_timeout(slow_leave_server: RunningServer) -> None:
    settings = MeshSettings(
        reconnect=ReconnectPolicy(max_attempts=1, base_delay=0.1, attempt_timeout=1.0),
        ping_interval=0.2,
        pong_timeout=1.0,
        quality_interval=None,
    )
    a = await connect(slow_leave_server, "a", settings)
    proc, victim = await spawn_peer(slow_leave_server, "victim")
    try:
        connected = a.events("peer_connected")
        while victim not in a.connected_peers():
            await connected.get(timeout=20)
        events = a.events("peer_reconnecting", "peer_lost", "peer_left")
        proc.send_signal(signal.SIGKILL)
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = await events.get(timeout=10)
        assert (first.name, first.peer_id) == ("peer_reconnecting", victim)
        lost = await events.wait_for("peer_lost", timeout=15)
        assert lost.peer_id == victim
        # pong timeout (1 s) + one retry (1 s) + slack; the server holds the slot 60 s
        assert loop.time() - start < 8
        assert a.connection_status(victim).state == "lost"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await a.disconnect()


async def test_frozen_peer_fails_pong_timeout_then_recovers(
    slow_leave_server: RunningServer,
) -> None:
    """SIGSTOP: the process holds its sockets but answers nothing, as a hung
    network would look. The link is declared failed and comes back after SIGCONT."""
    a = await connect(slow_leave_server, "a")
    proc, frozen = await spawn_peer(slow_leave_server, "frozen")
    try:
        connected = a.events("peer_connected")
        while frozen not in a.connected_peers():
            await connected.get(timeout=20)
        events = a.events("peer_reconnecting", "peer_connected")
        proc.send_signal(signal.SIGSTOP)
        ev = await events.get(timeout=10)
        assert (ev.name, ev.peer_id) == ("peer_reconnecting", frozen)
        assert a.connection_status(frozen).state == "reconnecting"
        proc.send_signal(signal.SIGCONT)
        ev = await events.wait_for("peer_connected", timeout=30)
        assert ev.peer_id == frozen
        inbox = a.events("message")
        await a.send_message("ping", to=frozen)
        pong = await inbox.wait_for("message", lambda e: e.peer_id == frozen, timeout=10)
        assert pong.data.text == "pong"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        await proc.wait()
        await a.disconnect()
