"""Real p2p-nb peers over the network emulator (bench/netem.py): each peer is
tests/relay_peer.py in its own network namespace, the signaling server lives
in the emulator's middle namespace (reached without crossing the emulated
path, so it stays reachable while the path is dark), and every frame between
the peers crosses the emulated path: the server relay is switched off, and
each test checks that the link is ``connected direct``.

Correctness only: what arrives, how often, in which order, with which
SHA-256. Nothing here asserts how long anything took; every wait is for an
output line of a peer, with a timeout. The one wait on time is the outage
itself (the path stays dark for at least :data:`OUTAGE_S`)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.netem import Network, emulated_path

from .test_recovery import (
    RELAY_TOKEN,
    NsPeer,
    ns_server,
    skip_without_netns_tools,
    stop_all,
)
from .test_transfer import listing, sha

pytestmark = pytest.mark.anyio

MB = 1_000_000
LOSSY = {"delay_ms": 10.0, "loss": 0.02}
"""20 ms round trip, 2 % random loss in each direction (every IP packet)."""
OUTAGE_S = 5.0
DIRECT = {"relay": False}
"""No fallback to the signaling server's relay: it lives in the middle, so a
relayed link would not cross the emulated path at all."""
FAST_FAILING = {**DIRECT, "ping_interval": 0.5, "pong_timeout": 2.0}
"""A link that hears nothing for 2 s has failed (default 10 s): well inside
the outage, so that the outage fails the link through the pong timeout."""


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    skip_without_netns_tools()


def random_file(path: Path, size: int) -> str:
    """``size`` random bytes, none repeated (unlike test_transfer.make_file's
    1 MiB block: a resume from a wrong offset must change the hash); returns
    the SHA-256."""
    path.write_bytes(os.urandom(size))
    return sha(path)


async def emu_peer(
    net: Network, node: str, url: str, name: str, downloads: Path, settings: dict[str, Any]
) -> tuple[NsPeer, str]:
    """tests/relay_peer.py inside ``node``'s namespace, joined to ``room1``."""
    proc = await net.python(
        node, "-m", "tests.relay_peer", url, RELAY_TOKEN, "room1", name, str(downloads),
        "", json.dumps(settings),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    peer = NsPeer(proc)
    return peer, (await peer.expect("READY", timeout=60))[1]


@asynccontextmanager
async def two_peers(
    tmp_path: Path, settings: dict[str, Any], **path: Any
) -> AsyncIterator[tuple[Network, NsPeer, NsPeer, str, str]]:
    """ "ana" in namespace ``a`` and "ben" in ``b`` over ``emulated_path(**path)``,
    the signaling server in the middle; yields once both see a direct link."""
    async with emulated_path(**path) as net:
        server, url = await ns_server(net.middle, net["a"].gateway)
        peers: list[NsPeer] = []
        try:
            a, id_a = await emu_peer(net, "a", url, "ana", tmp_path / "a", settings)
            peers.append(a)
            b, id_b = await emu_peer(net, "b", url, "ben", tmp_path / "b", settings)
            peers.append(b)
            for peer, other in ((a, id_b), (b, id_a)):
                await until(peer, f"STATE {other} connected direct", timeout=60)
            yield net, a, b, id_a, id_b
        finally:
            await stop_all(peers, server)


async def until(
    peer: NsPeer, want: str | Callable[[str], bool], start: int = 0, timeout: float = 30
) -> int:
    """Index in ``peer.lines`` of the first line at or after ``start`` that
    starts with ``want`` (or satisfies it), reading the peer's output as needed."""
    test = want if callable(want) else lambda line: line.startswith(want)
    seen = start
    try:
        async with asyncio.timeout(timeout):
            while True:
                for i in range(seen, len(peer.lines)):
                    if test(peer.lines[i]):
                        return i
                seen = len(peer.lines)
                await peer.expect("", timeout=timeout)  # any line
    except TimeoutError:
        tail = "\n".join(peer.lines[start:][-30:])
        raise AssertionError(f"no line {want!r} within {timeout} s; it printed:\n{tail}") from None


def received(peer: NsPeer) -> list[tuple[str, int, str]]:
    """(sender, seq, text) of every chat message the peer printed so far."""
    out = []
    for line in peer.lines:
        if line.startswith("MSG "):
            _, sender, seq, text = line.split(" ", 3)
            out.append((sender, int(seq), text))
    return out


async def messages(peer: NsPeer, n: int, timeout: float = 60) -> list[tuple[str, int, str]]:
    """Once the peer has printed at least ``n`` messages: all it printed."""
    async with asyncio.timeout(timeout):
        while len(received(peer)) < n:
            await peer.expect("MSG", timeout=timeout)
    return received(peer)


async def send_all(peer: NsPeer, texts: list[str]) -> None:
    for text in texts:
        await peer.command(f"send {text}")


async def failures(sender: NsPeer, receiver: NsPeer) -> list[str]:
    """Transfer failures either side printed: the receiver's output was read up
    to its FILE line; the sender's is read up to a message the receiver sends
    now (the sender's output is otherwise read only up to its STATE lines)."""
    await receiver.command("send checked")
    await until(sender, "MSG ")
    return [
        line
        for peer in (sender, receiver)
        for line in peer.lines
        if line.startswith(("EVENT transfer_failed", "EVENT error"))
    ]


async def test_a_20_mb_file_crosses_a_lossy_path_intact(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = random_file(src, 20 * MB)
    async with two_peers(tmp_path, DIRECT, **LOSSY) as (net, a, b, _, _):
        await a.command(f"share {src}")
        i = await until(b, "FILE ", timeout=240)
        _, name, got = b.lines[i].split(" ")
        assert (name, got) == (src.name, digest)  # hashed by the receiving process
        assert sha(tmp_path / "b" / src.name) == digest
        assert listing(tmp_path / "b") == [src.name]  # no part file left behind
        assert await failures(a, b) == []
        stats = await net.stats()
        # it crossed the emulated path, which dropped some of it
        assert stats["a>b"]["bytes"] > 20 * MB
        assert stats["a>b"]["lost"] > 0
        assert stats["b>a"]["lost"] > 0


async def test_500_chat_messages_cross_a_lossy_path_once_and_in_order(tmp_path: Path) -> None:
    # 1 kB each: some 450 packets, so the path's 2 % loss surely hits the stream
    texts = [f"m{i:03d}-" + "x" * 1000 for i in range(500)]
    async with two_peers(tmp_path, DIRECT, **LOSSY) as (net, a, b, id_a, _):
        lost_before = (await net.stats())["a>b"]["lost"]
        await send_all(a, texts)
        got = await messages(b, len(texts))
        assert len(got) == len(texts)
        assert got == [(id_a, i + 1, t) for i, t in enumerate(texts)]
        # nothing twice: the next message on the same ordered channel comes next
        await a.command("send after")
        assert (await messages(b, len(texts) + 1))[len(texts) :] == [
            (id_a, len(texts) + 1, "after")
        ]
        assert (await net.stats())["a>b"]["lost"] > lost_before


@asynccontextmanager
async def dark(net: Network, *watch: tuple[NsPeer, str]) -> AsyncIterator[Callable[[], Any]]:
    """The path is dark inside the block, which gets a coroutine function
    that waits until every (peer, other) in ``watch`` has left ``connected``
    for ``reconnecting``, failed by the pong timeout. The path comes
    back at the end of the block, once the outage has lasted
    :data:`OUTAGE_S` (a wait on time, on purpose: the outage is what is
    tested) and no earlier than the block's end."""
    marks = [len(peer.lines) for peer, _ in watch]
    loop = asyncio.get_running_loop()
    dark_at = loop.time()
    await net.set(loss=1.0)

    async def noticed() -> None:
        reasons = []
        for (peer, other), mark in zip(watch, marks, strict=True):
            i = await until(peer, f"STATE {other} ", start=mark, timeout=OUTAGE_S + 30)
            assert peer.lines[i].split(" ")[2] == "reconnecting", peer.lines[mark:]
            reasons += [
                line.split(" dropped (", 1)[1].split(")")[0]
                for line in peer.lines[mark:i]
                if line.startswith("DROPPED ") and f"-> {other} dropped" in line
            ]
        # the pong timeout failed the link; the other end noticed it as well,
        # or was told over the signaling server (an invite, or the new offer)
        assert reasons, "no link failure was logged"
        assert any(r.startswith("nothing heard for ") for r in reasons), reasons
        assert all(
            r.startswith("nothing heard for ") or r == "peer asked to reconnect" for r in reasons
        ), reasons

    yield noticed
    await asyncio.sleep(max(0.0, dark_at + OUTAGE_S - loop.time()))
    await net.set(loss=0.0)


async def test_a_link_dark_for_5_s_fails_reconnects_and_delivers_what_was_queued(
    tmp_path: Path,
) -> None:
    async with two_peers(tmp_path, FAST_FAILING, delay_ms=10.0) as (net, a, b, id_a, id_b):
        await a.command("send before")
        assert await messages(b, 1) == [(id_a, 1, "before")]
        marks = len(a.lines), len(b.lines)

        in_flight = [f"in-flight-{i}" for i in range(10)]  # taken by the channel, then lost
        queued = [f"queued-{i}" for i in range(20)]  # wait in the outbox
        async with dark(net, (a, id_b), (b, id_a)) as noticed:
            await send_all(a, in_flight)
            await noticed()  # both ends: connected -> reconnecting
            await send_all(a, queued)

        for peer, other, mark in ((a, id_b, marks[0]), (b, id_a, marks[1])):
            await until(peer, f"STATE {other} connected direct", start=mark, timeout=60)
        texts = ["before", *in_flight, *queued]
        got = await messages(b, len(texts))
        assert got == [(id_a, i + 1, t) for i, t in enumerate(texts)]
        await a.command("send after")
        assert (await messages(b, len(texts) + 1))[len(texts) :] == [
            (id_a, len(texts) + 1, "after")
        ]
        # and the other way round, over the new link
        await b.command("send back")
        assert await messages(a, 1) == [(id_b, 1, "back")]


async def test_a_transfer_across_a_5_s_outage_resumes_and_completes_intact(
    tmp_path: Path,
) -> None:
    src = tmp_path / "across.bin"
    size = 10 * MB
    digest = random_file(src, size)

    def incoming(line: str) -> int | None:
        """Bytes received so far, from a PROGRESS line of this transfer."""
        parts = line.split(" ")
        if parts[:3] == ["PROGRESS", "receive", src.name]:
            return int(parts[3])
        return None

    # 40 Mbit/s: 10 MB take two seconds at least, so the outage hits mid-transfer
    path = {"delay_ms": 10.0, "rate_mbit": 40.0}
    async with two_peers(tmp_path, FAST_FAILING, **path) as (net, a, b, id_a, id_b):
        await a.command(f"share {src}")
        await until(b, lambda line: (incoming(line) or 0) >= MB, timeout=60)
        marks = len(a.lines), len(b.lines)
        async with dark(net, (a, id_b), (b, id_a)) as noticed:
            assert not any(line.startswith("FILE ") for line in b.lines)
            await noticed()

        back = await until(b, f"STATE {id_a} connected direct", start=marks[1], timeout=60)
        await until(a, f"STATE {id_b} connected direct", start=marks[0], timeout=60)
        done = await until(b, "FILE ", timeout=120)
        assert done > back  # it finished over the new link
        _, name, got = b.lines[done].split(" ")
        assert (name, got) == (src.name, digest)
        assert sha(tmp_path / "b" / src.name) == digest
        assert listing(tmp_path / "b") == [src.name]
        assert await failures(a, b) == []
        # resumed, not started over: the receiver's count never went back
        counts = [n for n in map(incoming, b.lines) if n is not None]
        assert counts == sorted(counts), counts
        assert counts[-1] == size
