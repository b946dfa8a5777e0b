"""The tail-loss probe (``p2p_nb/ice.py``): a lost last packet is sent again
after about two round trips, not after SCTP's one-second T3 timer; and the
installed aiortc still has every internal the probe hooks (this fails loudly
when aiortc changes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from p2p_nb.app import P2PApp
from p2p_nb.ice import TailLossProbe, _ice_connection

from .conftest import MakePeer
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio


def sctp_of(app: P2PApp, other: P2PApp) -> Any:
    pc = app._mesh.link(other.peer_id or "").pc  # type: ignore[union-attr]
    assert pc is not None
    return pc.sctp


async def next_text(stream: Any, timeout: float = 10) -> str:
    async with asyncio.timeout(timeout):
        event = await stream.get()
    return str(event.data.text)


def drop_next_datagram(app: P2PApp, other: P2PApp) -> list[bytes]:
    """The next UDP datagram ``app`` sends to ``other`` is lost (what a lossy
    path does to it); returns the list the dropped datagram lands in."""
    pc = app._mesh.link(other.peer_id or "").pc  # type: ignore[union-attr]
    pair = _ice_connection(pc)._nominated[1]
    send: Callable[[bytes, tuple[str, int]], Awaitable[None]] = pair.protocol.send_data
    dropped: list[bytes] = []

    async def lossy(data: bytes, addr: tuple[str, int]) -> None:
        if not dropped:
            dropped.append(data)
            return
        await send(data, addr)

    pair.protocol.send_data = lossy
    return dropped


async def test_the_installed_aiortc_has_every_internal_the_probe_hooks(
    make_peer: MakePeer,
) -> None:
    ana, ben = await make_peer("ana"), await make_peer("ben")
    await wait_mesh([ana, ben])
    sctp = sctp_of(ana, ben)
    assert TailLossProbe.missing(sctp) == [], "p2p_nb/ice.py must follow this aiortc"
    assert isinstance(sctp._p2p_nb_tail_loss_probe, TailLossProbe)  # installed on open


async def test_a_lost_last_message_comes_back_by_probe_not_by_the_t3_timer(
    make_peer: MakePeer,
) -> None:
    ana, ben = await make_peer("ana"), await make_peer("ben")
    await wait_mesh([ana, ben])
    at_ben, at_ana = ben.events("message"), ana.events("message")
    # a round trip each way, so SCTP has measured the path's round-trip time
    await ana.send_message("warm")
    assert await next_text(at_ben) == "warm"
    await ben.send_message("warm too")
    assert await next_text(at_ana) == "warm too"
    sctp = sctp_of(ana, ben)
    assert sctp._srtt is not None
    probe: TailLossProbe = sctp._p2p_nb_tail_loss_probe
    timeouts, probes = probe.timeouts, probe.probes

    dropped = drop_next_datagram(ana, ben)
    await ana.send_message("lost once")
    assert await next_text(at_ben) == "lost once"
    assert dropped, "the message's packet was dropped on the way"
    assert probe.probes > probes, "the probe sent the lost chunk again"
    assert probe.timeouts == timeouts, "no T3 timeout was needed"
