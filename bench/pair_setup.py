"""Pair setup time on loopback: join -> data channel open, via signaling.

Baseline measured in the same run: two raw aiortc peer connections exchanging
SDP directly (no signaling server). Run inside the loopback-only namespace:
    unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/8 dev lo; \
        .venv/bin/python -m bench.pair_setup'
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection

from p2p_nb.app import P2PApp
from tests.conftest import spawn_signal_server, stop_process


async def p2p_nb_once(url: str, token: str, room: str) -> float:
    a = await P2PApp.connect(url, token, thread=False)
    b = await P2PApp.connect(url, token, thread=False)
    try:
        await a.join_room(room, name="a")
        done = [a.events("peer_connected"), b.events("peer_connected")]
        start = time.perf_counter()
        await b.join_room(room, name="b")
        for stream in done:
            await stream.get(timeout=30)
        return time.perf_counter() - start
    finally:
        await a.disconnect()
        await b.disconnect()


async def raw_once() -> float:
    pc1 = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc2 = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opened = [asyncio.Event(), asyncio.Event()]
    try:
        start = time.perf_counter()
        ch = pc1.createDataChannel("bench")
        ch.on("open", opened[0].set)
        pc2.on("datachannel", lambda c: opened[1].set())
        await pc1.setLocalDescription(await pc1.createOffer())
        await pc2.setRemoteDescription(pc1.localDescription)
        await pc2.setLocalDescription(await pc2.createAnswer())
        await pc1.setRemoteDescription(pc2.localDescription)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 30)
        return time.perf_counter() - start
    finally:
        await pc1.close()
        await pc2.close()


def summary(xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    med = statistics.median(ms)
    return f"median {med:7.1f} ms  p95 {p95:7.1f} ms  min {ms[0]:6.1f}  max {ms[-1]:6.1f}"


async def main(runs: int) -> None:
    server = await spawn_signal_server()
    try:
        ours = [await p2p_nb_once(server.url, server.token, f"b{i}") for i in range(runs)]
        raw = [await raw_once() for _ in range(runs)]
    finally:
        await stop_process(server.process)
    print(f"pair setup, {runs} runs each (loopback, {sys.platform})")
    print(f"  p2p-nb (join -> both channels open): {summary(ours)}")
    print(f"  raw aiortc (direct SDP exchange):    {summary(raw)}")
    print(f"  ratio of medians p2p-nb/raw: {statistics.median(ours) / statistics.median(raw):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
