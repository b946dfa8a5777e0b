"""One benchmark peer in its own OS process, as another user's kernel would be.

    python -m bench.worker p2p --url URL --token T [--uvloop] [--thread]
    python -m bench.worker raw [--uvloop]        # bare aiortc, SDP handed over by the runner
    python -m bench.worker sio --url URL         # Socket.IO client of bench.sio_relay

The runner (``python -m bench``) writes one JSON command per line on stdin
(``{"id": 1, "cmd": "msg_send", ...}``) and reads one JSON reply per command on
stdout (``{"id": 1, ...}`` or ``{"id": 1, "error": "..."}``). Every timestamp is
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the
machine) and every CPU figure ``time.process_time()`` (all threads).

Messages between peers are text: ``m...`` is counted, ``p<i>...`` is echoed
back as ``q<i>...`` (round-trip time), ``done``/``a<bytes>`` drive bulk sends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CHUNK = 65_536
"""Bulk frames: p2p-nb's frame size (64 KiB, header included)."""
HIGH_WATER = 1 << 20
LOW_WATER = 256 * 1024
"""The same flow control as p2p-nb (``TransferSettings.high_water``, ``peerlink.LOW_WATER``)."""
ACK_EVERY = 1 << 20
WINDOW = 8 << 20
"""Socket.IO relay bulk: acknowledged like p2p-nb's transfers (1 MiB acks, 8 MiB window)."""
YIELD_EVERY = 100
"""Small-message senders let the loop run once per this many messages."""


def now() -> float:
    return time.monotonic()


def cpu() -> float:
    return time.process_time()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Peer:
    """What every kind shares: counting, echoing, command dispatch."""

    def __init__(self) -> None:
        self.target = 0
        self.count = 0
        self.count_done: asyncio.Event = asyncio.Event()
        self.t_count = 0.0
        self.pongs: dict[str, asyncio.Future[float]] = {}
        self.bulk_target = 0
        self.bulk_got = 0
        self.bulk_done: asyncio.Event = asyncio.Event()
        self.t_bulk = 0.0
        self.cpu_bulk = 0.0
        self.t_arm = 0.0
        self.cpu_arm = 0.0
        self.acked = 0
        self.ack_event: asyncio.Event = asyncio.Event()
        self.remote_done: asyncio.Event = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.lat_target = 0
        self.lat: list[tuple[int, float]] = []
        self.lat_done: asyncio.Event = asyncio.Event()

    # -------------------------------------------------------- to override
    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def start(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> None:
        pass

    # ------------------------------------------------------------- receive
    def on_text(self, text: str) -> None:
        head = text[:1]
        if head == "m":
            self.count += 1
            if self.count == self.target:
                self.t_count = now()
                self.count_done.set()
        elif head == "p":
            self.spawn(self.send_text("q" + text[1:]))
        elif head == "q":
            fut = self.pongs.pop(text[1:9], None)
            if fut is not None and not fut.done():
                fut.set_result(now())
        elif text == "done":
            self.remote_done.set()
        elif head == "a":
            self.acked = int(text[1:])
            self.ack_event.set()
        elif head == "t":
            seq, stamp, _ = text[1:].split(" ", 2)
            self.lat.append((int(seq), now() - float(stamp)))
            if len(self.lat) >= self.lat_target:
                self.lat_done.set()

    def on_bytes(self, data: bytes) -> None:
        self.bulk_got += len(data)
        if self.bulk_got >= self.bulk_target and not self.bulk_done.is_set():
            self.t_bulk, self.cpu_bulk = now(), cpu()
            self.bulk_done.set()
            self.spawn(self.send_text("done"))

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ commands
    async def cmd_info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "rss_mb": rss_mb(), "maxrss_mb": maxrss_mb(), "cpu": cpu()}

    async def cmd_arm(self, n: int) -> dict[str, Any]:
        self.target, self.count = n, 0
        self.count_done = asyncio.Event()
        return {}

    async def cmd_wait_count(self, timeout: float = 60) -> dict[str, Any]:
        await asyncio.wait_for(self.count_done.wait(), timeout)
        return {"t": self.t_count}

    async def cmd_msg_send(self, n: int, size: int) -> dict[str, Any]:
        text = "m" + "x" * (size - 1)
        t0 = now()
        for i in range(n):
            await self.send_text(text)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return {"t0": t0, "t1": now()}

    async def cmd_rtt(self, n: int, size: int, timeout: float = 10) -> dict[str, Any]:
        pad = "x" * max(0, size - 9)
        loop = asyncio.get_running_loop()
        rtts = []
        for i in range(n):
            key = f"{i:08d}"
            fut: asyncio.Future[float] = loop.create_future()
            self.pongs[key] = fut
            t0 = now()
            await self.send_text("p" + key + pad)
            t1 = await asyncio.wait_for(fut, timeout)
            rtts.append(t1 - t0)
        return {"rtts": rtts}

    async def cmd_lat_arm(self, n: int) -> dict[str, Any]:
        self.lat_target, self.lat = n, []
        self.lat_done = asyncio.Event()
        return {}

    async def cmd_lat_send(self, n: int, gap_ms: float, size: int) -> dict[str, Any]:
        """``n`` chat-like messages, one every ``gap_ms`` (paced against the
        start), each stamped with its send time: the receiver measures one-way
        latency on the shared monotonic clock."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i * gap_ms / 1000 - loop.time()))
            text = f"t{i} {now():.9f} "
            await self.send_text(text + "x" * max(0, size - len(text)))
        return {}

    async def cmd_lat_wait(self, timeout: float = 60) -> dict[str, Any]:
        """One-way latencies in arrival order with their sequence numbers
        (what did not arrive within ``timeout`` is missing)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lat_done.wait(), timeout)
        return {"seqs": [s for s, _ in self.lat], "lat": [x for _, x in self.lat]}

    async def cmd_bulk_arm(self, n: int) -> dict[str, Any]:
        self.bulk_target, self.bulk_got = n, 0
        self.bulk_done = asyncio.Event()
        self.t_arm, self.cpu_arm = now(), cpu()
        return {}

    async def cmd_bulk_wait(self, timeout: float = 600) -> dict[str, Any]:
        await asyncio.wait_for(self.bulk_done.wait(), timeout)
        return {
            "t_arm": self.t_arm,
            "cpu_arm": self.cpu_arm,
            "t_done": self.t_bulk,
            "cpu_done": self.cpu_bulk,
            "maxrss_mb": maxrss_mb(),
        }


# ---------------------------------------------------------------- p2p-nb
SCTP_MODES = ("tuned", "probe", "window", "stock")
"""What of p2p-nb's SCTP tuning (``p2p_nb/_aiortc/``) a p2p worker runs with."""


class P2PPeer(Peer):
    def __init__(self, url: str, token: str, thread: bool, sctp: str = "tuned") -> None:
        super().__init__()
        self.url, self.token, self.thread, self.sctp = url, token, thread, sctp
        self.downloads = tempfile.mkdtemp(prefix="p2p-bench-")
        self.connected: dict[str, float] = {}
        self.connected_changed: asyncio.Event = asyncio.Event()
        self.df: Any = None
        self.df_path: Path | None = None

    async def start(self) -> dict[str, Any]:
        from p2p_nb.app import P2PApp
        from p2p_nb.links import MeshSettings

        self.app = await P2PApp.connect(
            self.url,
            self.token,
            thread=self.thread,
            download_dir=self.downloads,
            auto_accept_max_bytes=1 << 40,
            mesh_settings=MeshSettings(
                tail_loss_probe=self.sctp in ("tuned", "probe"),
                loss_tolerant_window=self.sctp in ("tuned", "window"),
                quick_transmit=self.sctp != "stock",
                delayed_sack=self.sctp != "stock",
            ),
        )
        self.app.on("message", lambda ev: self.on_text(ev.data.text))
        self.app.on("peer_connected", self._on_connected)
        self.app.on("file_offer", self._on_offer)
        self.app.on("file_received", self._on_received)
        return {}

    def _on_connected(self, ev: Any) -> None:
        self.connected.setdefault(ev.peer_id, now())
        self.connected_changed.set()
        self.connected_changed = asyncio.Event()

    def _on_offer(self, ev: Any) -> None:
        self.t_offer, self.cpu_offer = now(), cpu()

    def _on_received(self, ev: Any) -> None:
        self.t_bulk, self.cpu_bulk = now(), cpu()
        with contextlib.suppress(OSError):
            ev.data.path.unlink()
        self.bulk_done.set()

    async def send_text(self, text: str) -> None:
        await self.app.send_message(text)

    async def stop(self) -> None:
        await self.app.disconnect()

    async def cmd_join(self, room: str) -> dict[str, Any]:
        self.connected.clear()
        t0 = now()
        peer_id = await self.app.join_room(room, name=f"bench-{os.getpid()}")
        return {"t0": t0, "peer_id": peer_id}

    async def cmd_leave(self) -> dict[str, Any]:
        await self.app.leave_room()
        self.connected.clear()
        return {}

    async def cmd_wait_peers(self, n: int, timeout: float = 60) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while len(self.connected) < n:
                    await self.connected_changed.wait()
        except TimeoutError:
            states = {p: i.state for p, i in self.app.peers.items()}
            raise TimeoutError(f"{len(self.connected)} of {n} connected: {states}") from None
        return {"t": sorted(self.connected.values())[n - 1], "rss_mb": rss_mb()}

    async def cmd_bulk_wait(self, timeout: float = 600) -> dict[str, Any]:
        out = await super().cmd_bulk_wait(timeout)
        out["t_offer"] = self.t_offer
        return out

    async def cmd_share(self, path: str, timeout: float = 600) -> dict[str, Any]:
        t0, cpu0 = now(), cpu()
        share = await self.app.share_file(path)
        result = await share.wait(timeout)
        return {"t0": t0, "cpu0": cpu0, "t1": now(), "cpu1": cpu(), "result": result}

    async def cmd_sctp(self) -> dict[str, Any]:
        """aiortc's SCTP state of the first open link (see :func:`sctp_state`)."""
        mesh = getattr(self.app, "_mesh", None)
        for link in getattr(mesh, "links", {}).values():
            pc = getattr(link, "pc", None)
            if pc is not None:
                return sctp_state(pc.sctp)
        return {}

    async def cmd_make_df(self, mb: float) -> dict[str, Any]:
        """A CSV-like DataFrame (ids, timestamps, prices, categories, counts);
        returns the size of its CSV form, written once to a file."""
        import numpy as np
        import pandas as pd

        rows = int(mb * 1_000_000 / 58.5)  # ~58.5 bytes per CSV row
        rng = np.random.default_rng(6)
        cities = np.array(["Berlin", "Lisbon", "Nairobi", "Osaka", "Quito", "Tromsø", "Perth"])
        self.df = pd.DataFrame(
            {
                "order_id": np.arange(1_000_000, 1_000_000 + rows),
                "ts": pd.Timestamp("2024-01-01")
                + pd.to_timedelta(np.sort(rng.integers(0, 86_400 * 90, rows)), unit="s"),
                "city": pd.Categorical(cities[rng.integers(0, len(cities), rows)]),
                "price": np.round(rng.gamma(2.0, 20.0, rows), 2),
                "qty": rng.integers(1, 20, rows),
                "status": np.where(rng.random(rows) < 0.9, "shipped", "returned"),
            }
        )
        self.df_path = Path(self.downloads) / "frame.csv"
        await asyncio.to_thread(self.df.to_csv, self.df_path, index=True)
        return {"csv_bytes": self.df_path.stat().st_size, "rows": rows}

    async def cmd_share_df(self, timeout: float = 600) -> dict[str, Any]:
        t0, cpu0 = now(), cpu()
        share = await self.app.share_dataframe(self.df, name="frame")
        await share.wait(timeout)
        size = share.transfers[next(iter(share.transfers))].size
        return {"t0": t0, "cpu0": cpu0, "t1": now(), "cpu1": cpu(), "wire_bytes": size}


# ----------------------------------------------------------- raw aiortc
class RawPeer(Peer):
    """Bare aiortc: one RTCPeerConnection + data channel per key, SDP via the runner."""

    def __init__(self) -> None:
        super().__init__()
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        self._pc_cls, self._cfg, self._desc = (
            RTCPeerConnection,
            RTCConfiguration,
            RTCSessionDescription,
        )
        self.pcs: dict[int, Any] = {}
        self.channels: dict[int, Any] = {}
        self.opened: dict[int, asyncio.Future[float]] = {}

    def _new(self, k: int) -> Any:
        pc = self._pc_cls(self._cfg(iceServers=[]))
        self.pcs[k] = pc
        self.opened[k] = asyncio.get_running_loop().create_future()
        return pc

    def _attach(self, k: int, channel: Any) -> None:
        self.channels[k] = channel
        channel.bufferedAmountLowThreshold = LOW_WATER

        def on_message(msg: str | bytes) -> None:
            if isinstance(msg, bytes):
                self.on_bytes(msg)
            else:
                self.on_text(msg)

        channel.on("message", on_message)

        def opened() -> None:
            if not self.opened[k].done():
                self.opened[k].set_result(now())

        if channel.readyState == "open":
            opened()
        else:
            channel.on("open", opened)

    async def cmd_offer(self, k: int) -> dict[str, Any]:
        t0 = now()
        pc = self._new(k)
        self._attach(k, pc.createDataChannel("bench", ordered=True))
        await pc.setLocalDescription(await pc.createOffer())
        return {"t0": t0, "sdp": pc.localDescription.sdp}

    async def cmd_answer(self, k: int, sdp: str) -> dict[str, Any]:
        pc = self._new(k)
        pc.on("datachannel", lambda ch: self._attach(k, ch))
        await pc.setRemoteDescription(self._desc(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"sdp": pc.localDescription.sdp}

    async def cmd_accept(self, k: int, sdp: str) -> dict[str, Any]:
        await self.pcs[k].setRemoteDescription(self._desc(sdp, "answer"))
        return {}

    async def cmd_wait_open(self, k: int, timeout: float = 30) -> dict[str, Any]:
        return {"t": await asyncio.wait_for(self.opened[k], timeout), "rss_mb": rss_mb()}

    async def cmd_sctp(self, k: int = 0) -> dict[str, Any]:
        """aiortc's SCTP state of connection ``k`` (a diagnostic that reads
        aiortc 1.16's private fields; ``{}`` if they moved)."""
        return sctp_state(self.pcs[k].sctp)

    async def cmd_close(self, k: int) -> dict[str, Any]:
        pc = self.pcs.pop(k, None)
        self.channels.pop(k, None)
        self.opened.pop(k, None)
        if pc is not None:
            await pc.close()
        return {}

    async def send_text(self, text: str) -> None:
        self.channels[0].send(text)

    async def stop(self) -> None:
        for k in list(self.pcs):
            await self.cmd_close(k)

    async def cmd_bulk_send(self, n: int, timeout: float = 600) -> dict[str, Any]:
        channel = self.channels[0]
        room = asyncio.Event()
        channel.on("bufferedamountlow", room.set)
        self.remote_done = asyncio.Event()
        frame = b"\x00" * CHUNK
        t0, cpu0 = now(), cpu()
        sent = 0
        while sent < n:
            while channel.bufferedAmount > HIGH_WATER:
                room.clear()
                await asyncio.wait_for(room.wait(), 30)
            size = min(CHUNK, n - sent)
            channel.send(frame if size == CHUNK else frame[:size])
            sent += size
        await asyncio.wait_for(self.remote_done.wait(), timeout)
        return {"t0": t0, "cpu0": cpu0, "t1": now(), "cpu1": cpu(), "maxrss_mb": maxrss_mb()}


def window_state(sctp: Any) -> dict[str, Any]:
    """What p2p-nb's loss-tolerant window knows (nothing without it)."""
    window = getattr(sctp, "_p2p_nb_loss_window", None)
    if window is None:
        return {}
    return {"rtt_min": window.rtt_min, "estimate": window.estimate(), "holds": window.holds}


def sctp_state(sctp: Any) -> dict[str, Any]:
    """What aiortc's SCTP sender is doing right now, and how often its T3
    retransmission timer expired (counted from the first call on): a private
    view of aiortc 1.16 for diagnosis only (bench, never p2p_nb)."""
    try:
        if not getattr(sctp, "_bench_t3_hooked", False):
            original = sctp._t3_expired
            sctp._bench_t3 = 0

            def t3_expired() -> None:
                sctp._bench_t3 += 1
                original()

            sctp._t3_expired = t3_expired  # looked up when the timer is armed
            sctp._bench_t3_hooked = True
        return {
            "cwnd": sctp._cwnd,
            "ssthresh": sctp._ssthresh,
            "flight": sctp._flight_size,
            "rto": sctp._rto,
            "srtt": sctp._srtt,
            "sent_queue": len(sctp._sent_queue),
            "retransmit_marked": sum(1 for c in sctp._sent_queue if c._retransmit),
            "outbound_queue": len(sctp._outbound_queue),
            "fast_recovery": sctp._fast_recovery_exit is not None,
            "t3_expired": sctp._bench_t3,
            **window_state(sctp),
        }
    except AttributeError:
        return {}


# ------------------------------------------------------ Socket.IO relay
class SioPeer(Peer):
    """A client of ``bench.sio_relay``: every frame goes through the server."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import socketio

        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.peer = ""
        self.sio.on("m", self._on_m)

    def _on_m(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.on_bytes(data)
            got = self.bulk_got
            if got // ACK_EVERY != (got - len(data)) // ACK_EVERY and got < self.bulk_target:
                self.spawn(self.send_text(f"a{got}"))
        else:
            self.on_text(data)

    async def start(self) -> dict[str, Any]:
        await self.sio.connect(self.url, transports=["websocket"])
        return {"sid": self.sio.get_sid()}

    async def cmd_connect(self) -> dict[str, Any]:
        """Connect again (a new sid): the relay's "pair setup"."""
        if self.sio.connected:
            await self.sio.disconnect()
        t0 = now()
        await self.sio.connect(self.url, transports=["websocket"])
        return {"t0": t0, "t": now(), "sid": self.sio.get_sid()}

    async def cmd_peer(self, sid: str) -> dict[str, Any]:
        self.peer = sid
        return {}

    async def send_text(self, text: str) -> None:
        await self.sio.emit("r", (self.peer, text))

    async def stop(self) -> None:
        await self.sio.disconnect()

    async def cmd_bulk_send(self, n: int, timeout: float = 600) -> dict[str, Any]:
        self.remote_done = asyncio.Event()
        self.acked = 0
        frame = b"\x00" * CHUNK
        t0, cpu0 = now(), cpu()
        sent = 0
        while sent < n:
            while sent - self.acked > WINDOW:
                self.ack_event.clear()
                await asyncio.wait_for(self.ack_event.wait(), 30)
            size = min(CHUNK, n - sent)
            await self.sio.emit("r", (self.peer, frame if size == CHUNK else frame[:size]))
            sent += size
        await asyncio.wait_for(self.remote_done.wait(), timeout)
        return {"t0": t0, "cpu0": cpu0, "t1": now(), "cpu1": cpu(), "maxrss_mb": maxrss_mb()}


# ------------------------------------------------------------------ main
def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(peer: Peer) -> None:
    info = await peer.start()
    reply({"ev": "ready", "pid": os.getpid(), "rss_mb": rss_mb(), **info})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    quit_ = asyncio.Event()

    async def handle(msg: dict[str, Any]) -> None:
        mid = msg.pop("id")
        name = msg.pop("cmd")
        try:
            if name == "quit":
                quit_.set()
                reply({"id": mid})
                return
            method: Callable[..., Awaitable[dict[str, Any]]] = getattr(peer, f"cmd_{name}")
            if "timeout" not in inspect.signature(method).parameters:
                msg.pop("timeout", None)
            reply({"id": mid, **(await method(**msg))})
        except Exception as exc:
            reply({"id": mid, "error": f"{type(exc).__name__}: {exc}"})

    async def read() -> None:
        while line := await reader.readline():
            peer.spawn(handle(json.loads(line)))
        quit_.set()  # the runner is gone

    peer.spawn(read())
    await quit_.wait()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(peer.stop(), 10)


def udp_rcvbuf(size: int) -> None:
    """Give aioice's UDP sockets ``size`` bytes of receive buffer (aioice 0.13
    sets ``SO_RCVBUF`` to ``aioice.turn.UDP_SOCKET_BUFFER_SIZE``, 256 KiB, when
    it binds; the kernel caps it at ``net.core.rmem_max``). A diagnostic: a
    receiver that falls a few ms behind a fast sender loses datagrams in its
    own kernel (``RcvbufErrors``), which SCTP then has to repair."""
    import aioice.turn

    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["p2p", "raw", "sio"])
    parser.add_argument("--url", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--thread", action="store_true")
    parser.add_argument(
        "--sctp",
        choices=SCTP_MODES,
        default="tuned",
        help="p2p: p2p-nb's SCTP tuning: tuned (tail-loss probe, loss-tolerant window, "
        "quick transmit and delayed SACKs, the default), probe or window (that one, and "
        "the last two, which save CPU), stock (aiortc as it is)",
    )
    parser.add_argument(
        "--udp-rcvbuf",
        type=int,
        default=0,
        help="SO_RCVBUF of aioice's UDP sockets (a diagnostic for drops counted as "
        "RcvbufErrors; 0: aioice's 256 KiB)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("p2p_nb").setLevel(logging.INFO)

    async def run() -> None:
        peer: Peer
        if args.kind == "p2p":
            peer = P2PPeer(args.url, args.token, args.thread, args.sctp)
        elif args.kind == "raw":
            peer = RawPeer()
        else:
            peer = SioPeer(args.url)
        await serve(peer)

    if args.udp_rcvbuf:
        udp_rcvbuf(args.udp_rcvbuf)
    factory = None
    if args.uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
