"""File throughput between two processes on loopback: p2p-nb vs raw aiortc.

Both cases: the receiver is this process, the sender another process. p2p-nb
time runs from accepting the offer to the verified file in its final place
(chunks, acks, writing to disk, SHA-256 check). Raw aiortc time runs from "go"
to the last byte counted in memory, with the same frame size and flow control:
the ceiling. Run inside the loopback-only namespace (see README):

    python -m bench.file_transfer [--sizes 1 10 100] [--runs 3] [--memory 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from p2p_nb.app import P2PApp
from tests.conftest import spawn_signal_server, stop_process

MB = 1_000_000
ROOT = Path(__file__).resolve().parent.parent


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def p2p_nb_run(url: str, token: str, path: Path, room: str) -> tuple[float, float]:
    """Seconds for one transfer, and the sender's peak RSS (MB)."""
    with tempfile.TemporaryDirectory() as downloads:
        app = await P2PApp.connect(
            url, token, thread=False, download_dir=downloads, auto_accept_max_bytes=1 << 40
        )
        events = app.events("file_offer", "file_received", "transfer_failed", "message")
        connected = app.events("peer_connected")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.peer_process",
            url,
            token,
            room,
            "sender",
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            await app.join_room(room, name="receiver")
            assert proc.stdout is not None
            sender = (await proc.stdout.readline()).decode().split()[1]
            await connected.wait_for("peer_connected", lambda e: e.peer_id == sender)
            await app.send_message(f"share {path}", to=sender)
            await events.wait_for("file_offer", timeout=120)
            start = time.perf_counter()
            ev = await events.wait_for("file_received", timeout=600)
            elapsed = time.perf_counter() - start
            ev.data.path.unlink()
            await app.send_message("rss", to=sender)
            reply = await events.wait_for("message", lambda e: e.data.text.startswith("rss "))
            return elapsed, int(reply.data.text.split()[1]) / 1024
        finally:
            await app.disconnect()
            proc.kill()
            await proc.wait()


async def raw_run(size: int) -> tuple[float, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.raw_peer",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("raw", ordered=True)
    opened, done = asyncio.Event(), asyncio.Event()
    got = 0
    rss: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    @channel.on("message")
    def on_message(msg: bytes | str) -> None:
        nonlocal got
        if isinstance(msg, bytes):
            got += len(msg)
            if got >= size:
                done.set()
        elif msg.startswith("rss "):
            rss.set_result(int(msg[4:]) / 1024)

    channel.on("open", opened.set)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        assert proc.stdin is not None
        assert proc.stdout is not None
        desc = {"sdp": pc.localDescription.sdp, "type": "offer"}
        proc.stdin.write((json.dumps(desc) + "\n").encode())
        await proc.stdin.drain()
        answer = json.loads(await proc.stdout.readline())
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(opened.wait(), 30)
        start = time.perf_counter()
        channel.send(f"go {size}")
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - start
        channel.send("done")
        sender_rss = await asyncio.wait_for(rss, 30)
        channel.send("bye")
        return elapsed, sender_rss
    finally:
        await pc.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def make_file(folder: Path, size: int) -> Path:
    path = folder / f"bench-{size}.bin"
    block = os.urandom(MB)
    with path.open("wb") as f:
        for _ in range(size // MB):
            f.write(block)
        f.write(block[: size % MB])
    return path


async def main(sizes: list[int], runs: int, memory_mb: int) -> dict[str, object]:
    server = await spawn_signal_server()
    results: dict[str, object] = {"throughput": [], "memory": None}
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if memory_mb:
                # First, while this process has moved no bulk data yet: a warm-up
                # transfer loads every module, then the peak RSS must not grow.
                small = make_file(Path(tmp), MB)
                await p2p_nb_run(server.url, server.token, small, "warm")
                path = make_file(Path(tmp), memory_mb * MB)
                before = maxrss_mb()
                _, sender_rss = await p2p_nb_run(server.url, server.token, path, "mem")
                receiver_growth = maxrss_mb() - before
                _, raw_sender_rss = await raw_run(memory_mb * MB)
                results["memory"] = {
                    "file_mb": memory_mb,
                    "receiver_peak_rss_mb": round(maxrss_mb(), 1),
                    "receiver_peak_growth_mb": round(receiver_growth, 1),
                    "sender_peak_rss_mb": round(sender_rss, 1),
                    "raw_sender_peak_rss_mb": round(raw_sender_rss, 1),
                }
                path.unlink()
            for mb in sizes:
                path = make_file(Path(tmp), mb * MB)
                ours = [
                    (await p2p_nb_run(server.url, server.token, path, f"t{mb}-{i}"))[0]
                    for i in range(runs)
                ]
                raw = [(await raw_run(mb * MB))[0] for _ in range(runs)]
                o, r = mb / statistics.median(ours), mb / statistics.median(raw)
                rows.append(
                    (
                        mb,
                        o,
                        min(mb / x for x in ours),
                        max(mb / x for x in ours),
                        r,
                        min(mb / x for x in raw),
                        max(mb / x for x in raw),
                    )
                )
                path.unlink()
    finally:
        await stop_process(server.process)
    print(f"file throughput, MB/s (1 MB = 10^6 B), median of {runs} (min-max), loopback")
    print(f"{'size':>7} | {'p2p-nb':>22} | {'raw aiortc':>22} | ratio")
    for mb, o, olo, ohi, r, rlo, rhi in rows:
        print(
            f"{mb:>4} MB | {o:7.1f} ({olo:5.1f}-{ohi:5.1f}) | {r:7.1f} ({rlo:5.1f}-{rhi:5.1f}) "
            f"| {o / r:5.0%}"
        )
        results["throughput"].append(  # type: ignore[attr-defined]
            {"mb": mb, "p2p_nb": round(o, 2), "raw": round(r, 2), "ratio": round(o / r, 3)}
        )
    if results["memory"]:
        print(f"memory while sending {memory_mb} MB: {results['memory']}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--memory", type=int, default=200, help="MB file for the RSS check; 0 skips"
    )
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.runs, args.memory))
