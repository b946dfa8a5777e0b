"""``python -m bench.network`` (or ``python -m bench --network``): the benchmark
matrix over an emulated network (bench/netem.py), p2p-nb beside raw aiortc and
the Socket.IO relay in the same run.

    unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/8 dev lo; \\
        exec .venv/bin/python -m bench.network [--quick] [--out DIR]'

Needs root (network namespaces). Every point of the matrix (round trip x loss,
per direction) and the link point (100 Mbit/s, 20 ms round trip) measures,
for each variant: pair setup (p2p-nb: join -> data channel open through the
signaling server; raw aiortc: SDP handed over by this process, offer -> open;
Socket.IO: connect of both clients), chat one-way latency (messages sent one
every ``chat_gap_ms``, stamped on the machine's shared monotonic clock; p50,
p99, max, and whether every one arrived once, in order) and file throughput.
The link point adds a 100 MB file and the full mesh of ``mesh_peers``.

One emulator serves the whole run (conditions change live between points), so
the peers start once. The peers of a pair live in namespaces ``a`` and ``b``;
the signaling server and the Socket.IO relay live beside peer ``a``, so what
the relay carries from a to b crosses the emulated path exactly once, like the
direct link (the relay's TCP sees the same delay, loss and rate). The mesh
adds one namespace per further peer. Each point also records the emulator's
own view: a UDP echo round trip and loss, packets it dropped by queue or fell
behind on, and the forwarder's CPU share (near 100 %: the emulator, not the
peers, was the limit).

Results: ``network.json`` and ``network.png`` in ``--out`` (default
``bench/results/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .netem import Network, emulated_path, tcp_congestion_default, udp_probe
from .procs import ROOT, Registry, Worker, run_logs
from .suite import MB, Config, Pair, Suite, pct, stats

RAW_ATTEMPTS = 3
"""Tries of a bare-aiortc connection before the run fails (see Matrix.setup_raw)."""
SCTP_SAMPLE_S = 0.1
VARIANTS = {
    "p2p_nb": "p2p-nb",
    "p2p_nb_probe_only": "p2p-nb, TLP only",
    "p2p_nb_stock_sctp": "p2p-nb, stock SCTP",
    "raw_aiortc": "raw aiortc",
    "socketio_relay": "Socket.IO relay",
}
COMPARE_SCTP = {"p2p_nb_probe_only": "probe", "p2p_nb_stock_sctp": "stock"}
"""Every variant a run may have; these two (p2p-nb with only its tail-loss
probe, and with aiortc's SCTP as it is) only with ``--compare-sctp``: what
each part of ``p2p_nb/_aiortc/``'s SCTP tuning is worth."""


@dataclass
class Point:
    name: str
    rtt_ms: float
    loss: float
    rate_mbit: float = 0.0
    files_mb: list[int] = field(default_factory=lambda: [20])
    with_mesh: bool = False


@dataclass
class NetConfig:
    quick: bool = False
    rtts_ms: list[float] = field(default_factory=lambda: [0.0, 20.0, 80.0])
    losses: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05])
    file_mb: int = 20
    link_rate_mbit: float = 100.0
    link_rtt_ms: float = 20.0
    link_files_mb: list[int] = field(default_factory=lambda: [20, 100])
    jitter_ms: float = 0.0
    queue_packets: int = 1000
    setup_runs: int = 3
    chat_n: int = 200
    chat_gap_ms: float = 20.0
    chat_size: int = 100
    mesh_peers: int = 8
    tcp_congestion: str = ""
    """The peers' TCP congestion control ("": the namespace default, recorded)."""
    udp_rcvbuf: int = 0
    """SO_RCVBUF of the peers' aioice sockets (bench.worker --udp-rcvbuf); 0: aioice's."""
    link: bool = True
    compare_sctp: bool = False
    """Also run p2p-nb with less of its SCTP tuning (:data:`COMPARE_SCTP`)."""
    deadline: float = 3600.0

    @classmethod
    def quick_config(cls) -> NetConfig:
        """Small enough for the test suite: one lossy point and the link point."""
        return cls(
            quick=True,
            rtts_ms=[20.0],
            losses=[0.02],
            file_mb=2,
            link_files_mb=[2],
            setup_runs=1,
            chat_n=40,
            chat_gap_ms=10.0,
            mesh_peers=3,
            deadline=240.0,
        )

    def points(self) -> list[Point]:
        out = [
            Point(f"rtt{rtt:g}-loss{loss * 100:g}", rtt, loss, files_mb=[self.file_mb])
            for rtt in self.rtts_ms
            for loss in self.losses
        ]
        if not self.link:
            return out
        out.append(
            Point(
                f"link{self.link_rate_mbit:g}mbit-rtt{self.link_rtt_ms:g}",
                self.link_rtt_ms,
                0.0,
                self.link_rate_mbit,
                list(self.link_files_mb),
                with_mesh=True,
            )
        )
        return out


async def ns_worker(reg: Registry, net: Network, node: str, name: str, *argv: str) -> Worker:
    """A ``bench.worker`` inside ``node``'s namespace, registered like any other."""
    with reg.log_file(name) as log:
        proc = await asyncio.create_subprocess_exec(
            *net.prefix(node), sys.executable, "-m", "bench.worker", *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
        )  # fmt: skip
    reg.procs.append(proc)
    return Worker(reg, proc, name)


async def ns_server(
    reg: Registry, net: Network, node: str, name: str, tasks: set[asyncio.Task[None]], *argv: str
) -> str:
    """A server inside ``node``'s namespace; returns its first stdout line (a
    task in ``tasks`` reads the rest, so that it never blocks on a full pipe)."""
    with reg.log_file(name) as log:
        proc = await asyncio.create_subprocess_exec(
            *net.prefix(node), sys.executable, "-m", *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
        )  # fmt: skip
    reg.procs.append(proc)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    if not line:
        raise RuntimeError(f"{name} exited (code {await proc.wait()})")

    async def drain() -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    tasks.add(asyncio.ensure_future(drain()))
    return line


async def udp_counters(net: Network, node: str) -> dict[str, int]:
    """The kernel's UDP counters in ``node``'s namespace (``/proc/net/snmp``):
    ``RcvbufErrors`` are datagrams lost because the receiving process did not
    read its socket fast enough, a loss the emulator neither causes nor sees."""
    proc = await net.exec(node, "cat", "/proc/net/snmp", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    rows = [line.split()[1:] for line in out.decode().splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


class Matrix:
    def __init__(
        self, cfg: NetConfig, reg: Registry, net: Network, log: Any, names: list[str]
    ) -> None:
        self.cfg = cfg
        self.reg = reg
        self.net = net
        self.log = log
        self.names = names
        # bench.suite's helpers (bulk transfers, raw SDP hand-over, pair joins)
        self.suite = Suite(Config(), reg, log)
        self.pairs: dict[str, Pair] = {}
        self.extra: dict[str, list[Worker]] = {}
        self.p2p_joined: set[str] = set()
        self.rooms = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        a = self.net["a"].addr
        token = secrets.token_hex(12)
        banner = await ns_server(
            self.reg, self.net, "a", "signal", self.tasks, "p2p_nb.server",
            "--host", a, "--port", "4000", "--token", token,
        )  # fmt: skip
        self.suite.url, self.suite.token = banner.rsplit(" ", 1)[1], token
        if self.suite.url != f"http://{a}:4000/":
            raise RuntimeError(f"unexpected signaling banner: {banner}")
        port = await ns_server(
            self.reg, self.net, "a", "sio-relay", self.tasks, "bench.sio_relay", a
        )
        if not port.startswith("PORT "):
            raise RuntimeError(f"bench.sio_relay did not start: {port}")
        self.relay = f"http://{a}:{int(port.split()[1])}/"
        p2p = ("p2p", "--url", self.suite.url, "--token", token)
        buf = ("--udp-rcvbuf", str(self.cfg.udp_rcvbuf)) if self.cfg.udp_rcvbuf else ()
        p2p = (*p2p, *buf)
        kinds = {
            "p2p_nb": p2p,
            "raw_aiortc": ("raw", *buf),
            "socketio_relay": ("sio", "--url", self.relay),
        }
        if self.cfg.compare_sctp:
            for key, mode in COMPARE_SCTP.items():
                kinds[key] = (*p2p, "--sctp", mode)
        made: dict[str, list[Worker]] = {}
        for key, argv in kinds.items():
            nodes = self.names[:2] if key in COMPARE_SCTP else self.names  # no mesh
            made[key] = [
                await ns_worker(self.reg, self.net, node, f"{key}-{node}", *argv) for node in nodes
            ]
        await asyncio.gather(*(w.ready(timeout=300) for ws in made.values() for w in ws))
        for key, ws in made.items():
            self.pairs[key] = Pair(key, VARIANTS[key], ws[0], ws[1])
            self.extra[key] = ws[2:]

    # ------------------------------------------------------------ setup
    async def setup_p2p(self, runs: int, key: str = "p2p_nb") -> list[float]:
        pair = self.pairs[key]
        out = []
        for _ in range(runs):
            if key in self.p2p_joined:
                await asyncio.gather(
                    pair.a.call("leave", timeout=60), pair.b.call("leave", timeout=60)
                )
            self.rooms += 1
            out.append(await self.suite.p2p_join_pair(pair.a, pair.b, f"pair-{self.rooms}"))
            self.p2p_joined.add(key)
        return out

    async def setup_raw(self, runs: int) -> list[float]:
        pair = self.pairs["raw_aiortc"]
        out = []
        for _ in range(runs):
            for attempt in range(1, RAW_ATTEMPTS + 1):
                await asyncio.gather(pair.a.call("close", k=0), pair.b.call("close", k=0))
                try:
                    out.append(await self.suite.raw_connect(pair.a, pair.b, 0))
                    break
                except RuntimeError as exc:
                    # bare aiortc (no p2p_nb ICE fixes) now and then never opens
                    # here; the baseline's time is that of the attempts that did
                    if "wait_open" not in str(exc) or attempt == RAW_ATTEMPTS:
                        raise
                    self.log(f"raw aiortc did not open (attempt {attempt}): {exc}; again")
        return out

    async def setup_sio(self, runs: int) -> list[float]:
        pair = self.pairs["socketio_relay"]
        out = []
        for _ in range(runs):
            got = await asyncio.gather(pair.a.call("connect"), pair.b.call("connect"))
            out.append(max(g["t"] for g in got) - min(g["t0"] for g in got))
            await pair.a.call("peer", sid=got[1]["sid"])
            await pair.b.call("peer", sid=got[0]["sid"])
        return out

    # ------------------------------------------------------------- chat
    async def chat(self, pair: Pair) -> dict[str, Any]:
        cfg = self.cfg
        await pair.b.call("lat_arm", n=cfg.chat_n)
        await pair.a.call(
            "lat_send", n=cfg.chat_n, gap_ms=cfg.chat_gap_ms, size=cfg.chat_size, timeout=300
        )
        got = await pair.b.call("lat_wait", timeout=60)
        lat = sorted(x * 1000 for x in got["lat"])
        seqs = got["seqs"]
        return {
            "p50": round(pct(lat, 0.5), 3) if lat else None,
            "p99": round(pct(lat, 0.99), 3) if lat else None,
            "max": round(lat[-1], 3) if lat else None,
            "sent": cfg.chat_n,
            "arrived": len(seqs),
            "once_in_order": seqs == list(range(cfg.chat_n)),
            "unit": "ms",
        }

    async def bulk(self, pair: Pair, size: int) -> dict[str, Any]:
        """bench.suite's transfer, and for the SCTP variants what the sender's
        SCTP did meanwhile (sampled every ``SCTP_SAMPLE_S``): where the time goes."""
        if pair.key == "socketio_relay":
            row = await self.suite.bulk(pair, size)
            return {k: round(v, 3) for k, v in row.items()}
        samples: list[dict[str, Any]] = []

        async def sample() -> None:
            while True:
                state = await pair.a.call("sctp")
                if state:
                    samples.append(state)
                await asyncio.sleep(SCTP_SAMPLE_S)

        first = await pair.a.call("sctp")
        udp0 = await udp_counters(self.net, "b")
        task = asyncio.ensure_future(sample())
        try:
            row = await self.suite.bulk(pair, size)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        last = await pair.a.call("sctp")
        udp1 = await udp_counters(self.net, "b")
        out: dict[str, Any] = {k: round(v, 3) for k, v in row.items()}
        # this transfer's datagrams lost in the receiver's own full socket buffer
        out["udp_rcvbuf_errors"] = udp1["RcvbufErrors"] - udp0["RcvbufErrors"]
        if first and last and samples:
            cwnd = [x["cwnd"] for x in samples]
            flight = [x["flight"] for x in samples]
            out["sctp"] = {
                "t3_expired": last["t3_expired"] - first["t3_expired"],
                "cwnd_median_kb": round(statistics.median(cwnd) / 1000, 1),
                "cwnd_max_kb": round(max(cwnd) / 1000, 1),
                "flight_median_kb": round(statistics.median(flight) / 1000, 1),
                "fast_recovery_share": round(
                    sum(x["fast_recovery"] for x in samples) / len(samples), 3
                ),
                "rto_max_s": round(max(x["rto"] for x in samples), 3),
                "samples": len(samples),
            }
            srtt = [x["srtt"] for x in samples if x.get("srtt")]
            if srtt:
                out["sctp"]["srtt_median_ms"] = round(statistics.median(srtt) * 1000, 1)
            if last.get("rtt_min") is not None:  # p2p-nb's loss-tolerant window
                out["sctp"]["rtt_min_ms"] = round(last["rtt_min"] * 1000, 1)
                out["sctp"]["estimate_median_kb"] = round(
                    statistics.median(x.get("estimate", 0) for x in samples) / 1000, 1
                )
                out["sctp"]["holds"] = last["holds"] - first.get("holds", 0)
        return out

    # ------------------------------------------------------------- mesh
    async def mesh(self) -> dict[str, float]:
        n = self.cfg.mesh_peers
        out: dict[str, float] = {}
        p2p = [self.pairs["p2p_nb"].a, self.pairs["p2p_nb"].b, *self.extra["p2p_nb"]][:n]
        if "p2p_nb" in self.p2p_joined:
            await asyncio.gather(*(w.call("leave", timeout=60) for w in p2p[:2]))
            self.p2p_joined.discard("p2p_nb")
        self.rooms += 1
        t0 = time.monotonic()
        for w in p2p:  # one after another, as bench.suite's mesh does
            await w.call("join", room=f"mesh-{self.rooms}")
        done = await asyncio.gather(*(w.call("wait_peers", n=n - 1, timeout=300) for w in p2p))
        out["p2p_nb"] = max(d["t"] for d in done) - t0
        await asyncio.gather(*(w.call("leave", timeout=60) for w in p2p))

        raw = [self.pairs["raw_aiortc"].a, self.pairs["raw_aiortc"].b, *self.extra["raw_aiortc"]]
        raw = raw[:n]
        t0 = time.monotonic()
        await asyncio.gather(
            *(
                self.suite.raw_connect(raw[i], raw[j], 1000 + 64 * i + j)
                for i in range(n)
                for j in range(i + 1, n)
            )
        )
        out["raw_aiortc"] = time.monotonic() - t0
        sio = [
            self.pairs["socketio_relay"].a,
            self.pairs["socketio_relay"].b,
            *self.extra["socketio_relay"],
        ][:n]
        got = await asyncio.gather(*(w.call("connect") for w in sio))
        out["socketio_relay"] = max(g["t"] for g in got) - min(g["t0"] for g in got)
        return out

    # ------------------------------------------------------------ point
    async def point(self, p: Point) -> dict[str, Any]:
        cfg = self.cfg
        await self.net.set(
            delay_ms=p.rtt_ms / 2,
            loss=p.loss,
            rate_mbit=p.rate_mbit,
            jitter_ms=cfg.jitter_ms,
            queue_packets=cfg.queue_packets,
        )
        probe = await udp_probe(self.net, "a", "b", n=50, interval_ms=5)
        emu_before = await self.net.stats()
        udp_before = {n: await udp_counters(self.net, n) for n in ("a", "b")}
        fwd = psutil.Process(self.net._forwarder.pid)
        cpu0, t0 = sum(fwd.cpu_times()[:2]), time.monotonic()
        res: dict[str, Any] = {
            **asdict(p),
            "load_avg": round(os.getloadavg()[0], 2),
            "probe": {
                "udp_rtt_p50_ms": round(statistics.median(probe.received) * 1000, 2)
                if probe.received
                else None,
                "udp_lost_share": round(probe.lost_share, 3),
            },
            "variants": {k: {} for k in VARIANTS if k in self.pairs},
        }
        setups = {
            "p2p_nb": await self.setup_p2p(cfg.setup_runs),
            "raw_aiortc": await self.setup_raw(cfg.setup_runs),
            "socketio_relay": await self.setup_sio(cfg.setup_runs),
        }
        for key in COMPARE_SCTP:
            if key in self.pairs:
                setups[key] = await self.setup_p2p(cfg.setup_runs, key)
        for key, xs in setups.items():
            res["variants"][key]["setup_ms"] = {**stats(xs, 1000), "unit": "ms"}
        for key, pair in self.pairs.items():
            res["variants"][key]["chat"] = await self.chat(pair)
        for size in p.files_mb:
            self.suite.file(size * MB)
            for key, pair in self.pairs.items():
                row = await self.bulk(pair, size * MB)
                res["variants"][key].setdefault("file", {})[f"{size}MB"] = row
        if p.with_mesh:
            res["mesh"] = {
                "peers": cfg.mesh_peers,
                **{k: round(v, 3) for k, v in (await self.mesh()).items()},
                "unit": "s",
            }
        wall = time.monotonic() - t0
        emu = await self.net.stats()
        dropped = {"lost": 0, "queue_dropped": 0, "forwarded": 0, "tun_dropped": 0}
        for key, counts in emu.items():
            for name, value in counts.items():
                before = emu_before.get(key, {}).get(name, 0)
                if name in dropped:
                    dropped[name] += value - before
        for n in ("a", "b"):
            udp = await udp_counters(self.net, n)
            dropped[f"udp_rcvbuf_errors_{n}"] = udp["RcvbufErrors"] - udp_before[n]["RcvbufErrors"]
        res["emulator"] = {
            **dropped,
            "forwarder_cpu_pct": round(100 * (sum(fwd.cpu_times()[:2]) - cpu0) / wall, 1),
        }
        res["limit"] = limit(res)
        self.log(summary(res))
        return res


def limit(res: dict[str, Any]) -> str:
    """A first reading of what limits the point, from what the run itself saw
    (the emulator's counters, the receivers' kernels, the senders' SCTP)."""
    emu = res["emulator"]
    notes = []
    if emu["tun_dropped"] or emu["forwarder_cpu_pct"] > 85:
        notes.append("the emulator (forwarder CPU or TUN overflow): figures are lower bounds")
    if res["rate_mbit"]:
        notes.append(f"link rate {res['rate_mbit']:g} Mbit/s = {res['rate_mbit'] / 8:g} MB/s")
    if res["loss"]:
        notes.append(f"{res['loss'] * 100:g} % loss per direction")
    if res["rtt_ms"]:
        notes.append(f"{res['rtt_ms']:g} ms round trip")
    overflow = emu.get("udp_rcvbuf_errors_b", 0)
    if overflow:
        notes.append(f"{overflow} datagrams lost in the receiver's full socket buffer")
    for key, v in res["variants"].items():
        for size, f in v.get("file", {}).items():
            sctp = f.get("sctp")
            if sctp and sctp["t3_expired"]:
                notes.append(f"{key} {size}: {sctp['t3_expired']} SCTP T3 timeouts")
            rtt = res["probe"]["udp_rtt_p50_ms"]
            if sctp and rtt and rtt >= 5:
                bound = sctp["cwnd_median_kb"] / rtt  # kB per ms = MB/s
                if f["mb_s"] >= 0.6 * bound:
                    notes.append(
                        f"{key} {size}: SCTP's congestion window ({sctp['cwnd_median_kb']:g} kB "
                        f"median, cwnd/RTT = {bound:.2f} MB/s)"
                    )
            if sctp and sctp["rto_max_s"] > 1:
                notes.append(
                    f"{key} {size}: SCTP RTO up to {sctp['rto_max_s']:g} s (a loss nothing "
                    f"after it reveals waits that long; flight {sctp['flight_median_kb']:g} kB)"
                )
    if res["load_avg"] > (os.cpu_count() or 1):
        notes.append(
            f"machine load {res['load_avg']:g} on {os.cpu_count()} CPUs: the peers may be "
            "CPU-starved (compare variants within the point)"
        )
    return "; ".join(notes) or "CPU of the peers (no delay, loss or rate)"


def summary(res: dict[str, Any]) -> str:
    parts = [f"{res['name']}:"]
    for key, v in res["variants"].items():
        files = " ".join(f"{s} {f['mb_s']:.2f} MB/s" for s, f in v.get("file", {}).items())
        c = v["chat"]
        parts.append(
            f"{key} setup {v['setup_ms']['median']:.0f} ms, chat p50/p99/max "
            f"{c['p50']}/{c['p99']}/{c['max']} ms ({c['arrived']}/{c['sent']}), {files};"
        )
    if "mesh" in res:
        parts.append(f"mesh {res['mesh']}")
    parts.append(f"emulator {res['emulator']}")
    return " ".join(parts)


def table(r: dict[str, Any]) -> str:
    out = [
        f"p2p-nb over an emulated network ({r['meta']['command']}); loss is per direction; "
        f"TCP congestion control {r['meta']['tcp_congestion']}",
        "",
        f"{'point':<24}{'variant':<17}{'setup ms':>9}{'chat p50':>9}{'p99':>8}{'max':>8}"
        f"{'ok':>4}  file MB/s",
    ]
    for p in r["points"]:
        for key, v in p["variants"].items():
            c = v["chat"]
            files = "  ".join(f"{s} {f['mb_s']:.2f}" for s, f in v.get("file", {}).items())
            out.append(
                f"{p['name']:<24}{VARIANTS[key]:<17}{v['setup_ms']['median']:>9.0f}"
                f"{c['p50'] or 0:>9.1f}{c['p99'] or 0:>8.1f}{c['max'] or 0:>8.1f}"
                f"{'yes' if c['once_in_order'] else 'NO':>4}  {files}"
            )
        if "mesh" in p:
            m = p["mesh"]
            out.append(
                f"{'':<24}full mesh of {m['peers']}: p2p-nb {m['p2p_nb']:.2f} s, raw aiortc "
                f"{m['raw_aiortc']:.2f} s, Socket.IO connects {m['socketio_relay']:.2f} s"
            )
        e = p["emulator"]
        out.append(
            f"{'':<24}emulator: UDP RTT {p['probe']['udp_rtt_p50_ms']} ms, forwarder CPU "
            f"{e['forwarder_cpu_pct']} %, dropped lost/queue/tun {e['lost']}/"
            f"{e['queue_dropped']}/{e['tun_dropped']}; limit: {p['limit']}"
        )
    return "\n".join(out)


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "p2p_nb": "#1f77b4",
        "p2p_nb_probe_only": "#9467bd",
        "p2p_nb_stock_sctp": "#8c564b",
        "raw_aiortc": "#d62728",
        "socketio_relay": "#2ca02c",
    }
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    fig.suptitle(f"p2p-nb over an emulated network ({r['meta']['command']})")
    matrix = [p for p in r["points"] if not p["rate_mbit"]]
    rtts = sorted({p["rtt_ms"] for p in matrix})
    for key in [k for k in VARIANTS if matrix and k in matrix[0]["variants"]]:
        for i, rtt in enumerate(rtts):
            pts = sorted((p for p in matrix if p["rtt_ms"] == rtt), key=lambda p: p["loss"])
            xs = [p["loss"] * 100 for p in pts]
            v = [p["variants"][key] for p in pts]
            label = f"{VARIANTS[key]}, RTT {rtt:g} ms"
            style = {"color": colors[key], "linestyle": styles[i % 4], "marker": "o"}
            size = next(iter(v[0]["file"]))
            axes[0].plot(xs, [x["file"][size]["mb_s"] for x in v], label=label, **style)
            axes[1].plot(xs, [x["chat"]["p99"] or 0 for x in v], label=label, **style)
            axes[2].plot(xs, [x["setup_ms"]["median"] for x in v], label=label, **style)
    axes[0].set_title("file throughput (MB/s)")
    axes[1].set_title("chat one-way p99 (ms)")
    axes[1].set_yscale("log")
    axes[2].set_title("pair setup median (ms)")
    for ax in axes:
        ax.set_xlabel("loss per direction (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def run_matrix(cfg: NetConfig, reg: Registry, log: Any) -> dict[str, Any]:
    names = ["a", "b", *(f"p{i}" for i in range(2, max(2, cfg.mesh_peers)))]
    began = time.monotonic()
    points = []
    async with emulated_path(names, tcp_congestion=cfg.tcp_congestion or None) as net:
        matrix = Matrix(cfg, reg, net, log, names)
        try:
            async with asyncio.timeout(cfg.deadline):
                await matrix.start()
                log(f"started {len(reg.procs)} processes in {time.monotonic() - began:.1f} s")
                try:
                    for p in cfg.points():
                        points.append(await matrix.point(p))
                finally:
                    with contextlib.suppress(OSError):
                        for f in matrix.suite.tmp.glob("*"):
                            f.unlink()
                        matrix.suite.tmp.rmdir()
        finally:
            await reg.stop_all()
            for task in matrix.tasks:
                task.cancel()
    return {
        "meta": {
            "config": asdict(cfg),
            "tcp_congestion": cfg.tcp_congestion or tcp_congestion_default(),
            "variants": VARIANTS,
            "seconds": round(time.monotonic() - began, 1),
        },
        "points": points,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.network", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="one lossy point + the link point")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--point",
        nargs=2,
        action="append",
        type=float,
        metavar=("RTT_MS", "LOSS"),
        help="measure only these points (loss as a share, e.g. 0.02); repeatable",
    )
    parser.add_argument("--file-mb", type=int, help="file size at the matrix points")
    parser.add_argument("--no-link", action="store_true", help="skip the 100 Mbit/s link point")
    parser.add_argument("--link-only", action="store_true", help="only the 100 Mbit/s link point")
    parser.add_argument("--link-files-mb", type=int, nargs="+", help="file sizes at the link point")
    parser.add_argument("--mesh-peers", type=int, help="full-mesh size at the link point")
    parser.add_argument(
        "--tcp-cc",
        default="",
        help="the peers' TCP congestion control, e.g. reno (default: the system's)",
    )
    parser.add_argument("--udp-rcvbuf", type=int, default=0, help="peers' UDP SO_RCVBUF (bytes)")
    parser.add_argument(
        "--compare-sctp",
        action="store_true",
        help="also run p2p-nb with only its tail-loss probe, and with aiortc's stock SCTP",
    )
    args = parser.parse_args(argv)
    from .__main__ import machine

    cfg = NetConfig.quick_config() if args.quick else NetConfig()
    if args.point:
        cfg.rtts_ms = sorted({rtt for rtt, _ in args.point})
        cfg.losses = sorted({loss for _, loss in args.point})
    if args.file_mb:
        cfg.file_mb = args.file_mb
    if args.link_files_mb:
        cfg.link_files_mb = args.link_files_mb
    if args.mesh_peers:
        cfg.mesh_peers = args.mesh_peers
    cfg.udp_rcvbuf = args.udp_rcvbuf
    cfg.compare_sctp = args.compare_sctp
    cfg.tcp_congestion = args.tcp_cc
    if args.link_only:
        cfg.rtts_ms, cfg.losses = [], []
    if args.no_link:
        cfg.link = False
        cfg.mesh_peers = 2
    reg, log = run_logs(args.out, "logs-network")

    info = machine()
    results = asyncio.run(run_matrix(cfg, reg, log))
    results["meta"]["machine"] = info
    results["meta"]["command"] = "python -m bench.network" + (" --quick" if args.quick else "")
    (args.out / "network.json").write_text(json.dumps(results, indent=1) + "\n")
    chart(results, args.out / "network.png")
    print(table(results))
    print(f"wrote {args.out / 'network.json'} and {args.out / 'network.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
