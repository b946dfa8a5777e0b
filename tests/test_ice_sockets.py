"""A peer connection closed while it gathers leaves no UDP socket
open (aioice adds its host sockets to the connection only when gathering ends;
seen as "unclosed resource <UDPTransport>" when a guest left a room at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from p2p_nb._aiortc import set_local_description

pytestmark = pytest.mark.anyio


def open_sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def gathering(pc: RTCPeerConnection) -> asyncio.Task[None]:
    """set_local_description started, returned once aioice is gathering."""
    started = asyncio.Event()
    pc.on(
        "icegatheringstatechange",
        lambda: started.set() if pc.iceGatheringState == "gathering" else None,
    )
    pc.createDataChannel("x")
    task = asyncio.ensure_future(set_local_description(pc, await pc.createOffer()))
    async with asyncio.timeout(10):
        await started.wait()
    assert not task.done()
    return task


async def test_a_close_that_overtakes_gathering_closes_its_sockets() -> None:
    before = open_sockets()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    task = await gathering(pc)
    await pc.close()
    with contextlib.suppress(Exception):
        await task
    assert open_sockets() == before
