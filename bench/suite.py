"""Every measurement of ``python -m bench``, each beside its baselines, in one run.

Peers are ``bench.worker`` processes; this process only gives orders and reads
their clocks (CLOCK_MONOTONIC, shared by every process of the machine), so it
takes no part in the traffic it measures. Each figure is the median of several
runs with min and max; runs of different variants are interleaved so that
noise from other work on the machine spreads over all of them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .procs import Registry, Worker, relay_server, signal_server

MB = 1_000_000


@dataclass
class Config:
    quick: bool = False
    setup_runs: int = 20
    runs: int = 3
    msg_count: int = 10_000
    msg_size: int = 100
    rtt_count: int = 1_000
    sizes_mb: list[int] = field(default_factory=lambda: [1, 10, 100])
    big_mb: int = 1000
    big_runs: int = 1
    df_mb: int = 100
    mesh_sizes: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    mesh_runs: int = 3
    idle_seconds: float = 5.0
    raw_mem_runs: int = 3
    uvloop: bool = True
    deadline: float = 900.0

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            setup_runs=6,
            runs=2,
            msg_count=2_000,
            rtt_count=200,
            sizes_mb=[1, 10],
            big_mb=50,
            df_mb=10,
            mesh_sizes=[2, 4, 8],
            mesh_runs=2,
            idle_seconds=2.0,
            raw_mem_runs=2,
            deadline=170.0,
        )


def stats(xs: list[float], scale: float = 1.0) -> dict[str, float]:
    ys = sorted(x * scale for x in xs)
    return {
        "median": round(statistics.median(ys), 4),
        "min": round(ys[0], 4),
        "max": round(ys[-1], 4),
        "n": len(ys),
    }


def pct(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, round(q * (len(ys) - 1)))]


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


@dataclass
class Pair:
    key: str
    label: str
    a: Worker
    b: Worker


VARIANTS = {
    "p2p_nb": "p2p-nb",
    "p2p_nb_uvloop": "p2p-nb + uvloop",
    "raw_aiortc": "raw aiortc",
    "raw_aiortc_uvloop": "raw aiortc + uvloop",
    "socketio_relay": "Socket.IO relay",
}


class Suite:
    def __init__(self, cfg: Config, reg: Registry, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.reg = reg
        self.log = log
        self.url = ""
        self.token = ""
        self.relay_url = ""
        self.pairs: dict[str, Pair] = {}
        self.results: dict[str, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="p2p-bench-files-"))

    # ------------------------------------------------------------ helpers
    async def worker(self, name: str, kind: str, *args: str) -> Worker:
        if kind == "p2p":
            args = ("--url", self.url, "--token", self.token, *args)
        elif kind == "sio":
            args = ("--url", self.relay_url, *args)
        return await Worker.spawn(self.reg, name, kind, *args)

    async def raw_connect(self, a: Worker, b: Worker, k: int) -> float:
        """Direct SDP exchange between two raw workers; seconds until both are open."""
        offer = await a.call("offer", k=k)
        answer = await b.call("answer", k=k, sdp=offer["sdp"])
        await a.call("accept", k=k, sdp=answer["sdp"])
        opened = await asyncio.gather(a.call("wait_open", k=k), b.call("wait_open", k=k))
        return max(o["t"] for o in opened) - float(offer["t0"])

    async def p2p_join_pair(self, a: Worker, b: Worker, room: str) -> float:
        await a.call("join", room=room)
        t0 = (await b.call("join", room=room))["t0"]
        done = await asyncio.gather(a.call("wait_peers", n=1), b.call("wait_peers", n=1))
        return max(d["t"] for d in done) - float(t0)

    def file(self, size: int) -> Path:
        path = self.tmp / f"bench-{size}.bin"
        if not path.exists():
            block = os.urandom(MB)
            with path.open("wb") as f:
                for _ in range(size // MB):
                    f.write(block)
                f.write(block[: size % MB])
        return path

    # -------------------------------------------------------------- setup
    async def start(self) -> None:
        self.url, self.token = await signal_server(self.reg)
        self.relay_url = await relay_server(self.reg)
        uv = self.cfg.uvloop and have_uvloop()
        specs: list[tuple[str, str, tuple[str, ...]]] = [
            ("p2p_nb", "p2p", ()),
            ("raw_aiortc", "raw", ()),
            ("socketio_relay", "sio", ()),
        ]
        if uv:
            specs += [
                ("p2p_nb_uvloop", "p2p", ("--uvloop",)),
                ("raw_aiortc_uvloop", "raw", ("--uvloop",)),
            ]
        made = await asyncio.gather(
            *(self.worker(f"{key}-{s}", kind, *args) for key, kind, args in specs for s in "ab")
        )
        await asyncio.gather(*(w.ready() for w in made))
        for i, (key, _, _) in enumerate(specs):
            self.pairs[key] = Pair(key, VARIANTS[key], made[2 * i], made[2 * i + 1])
        order = [k for k in VARIANTS if k in self.pairs]
        self.pairs = {k: self.pairs[k] for k in order}

    async def link_pairs(self) -> None:
        for key, pair in self.pairs.items():
            if key.startswith("p2p"):
                await self.p2p_join_pair(pair.a, pair.b, f"pair-{key}")
            elif key.startswith("raw"):
                await self.raw_connect(pair.a, pair.b, 0)
            else:
                await pair.a.call("peer", sid=pair.b.info["sid"])
                await pair.b.call("peer", sid=pair.a.info["sid"])

    # -------------------------------------------------------- measurements
    async def pair_setup(self) -> None:
        p, r = self.pairs["p2p_nb"], self.pairs["raw_aiortc"]
        ours, raw = [], []
        for i in range(self.cfg.setup_runs):
            ours.append(await self.p2p_join_pair(p.a, p.b, f"setup-{i}"))
            await asyncio.gather(p.a.call("leave"), p.b.call("leave"))
            raw.append(await self.raw_connect(r.a, r.b, 100 + i))
            await asyncio.gather(r.a.call("close", k=100 + i), r.b.call("close", k=100 + i))
        self.results["pair_setup"] = {
            key: {**stats(xs, 1000), "p95": round(pct(xs, 0.95) * 1000, 4), "unit": "ms"}
            for key, xs in (("p2p_nb", ours), ("raw_aiortc", raw))
        }
        self.log(f"pair setup: p2p-nb {stats(ours, 1000)}, raw {stats(raw, 1000)}")

    async def message_rate(self) -> None:
        n, size = self.cfg.msg_count, self.cfg.msg_size
        rates: dict[str, list[float]] = {k: [] for k in self.pairs}
        for _ in range(self.cfg.runs):
            for key, pair in self.pairs.items():
                await pair.b.call("arm", n=n)
                sent = await pair.a.call("msg_send", n=n, size=size)
                got = await pair.b.call("wait_count", timeout=120)
                rates[key].append(n / (got["t"] - sent["t0"]))
        self.results["message_rate"] = {k: {**stats(v), "unit": "msg/s"} for k, v in rates.items()}
        self.log(
            "messages/s: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in rates.items())
        )

    async def latency(self) -> None:
        p50: dict[str, list[float]] = {k: [] for k in self.pairs}
        p99: dict[str, list[float]] = {k: [] for k in self.pairs}
        for _ in range(self.cfg.runs):
            for key, pair in self.pairs.items():
                rtts = (await pair.a.call("rtt", n=self.cfg.rtt_count, size=self.cfg.msg_size))[
                    "rtts"
                ]
                p50[key].append(pct(rtts, 0.5))
                p99[key].append(pct(rtts, 0.99))
        self.results["rtt"] = {
            k: {"p50": stats(p50[k], 1000), "p99": stats(p99[k], 1000), "unit": "ms"}
            for k in self.pairs
        }
        self.log(
            "RTT p50 ms: "
            + ", ".join(f"{k} {statistics.median(v) * 1000:.3f}" for k, v in p50.items())
        )

    async def bulk(self, pair: Pair, size: int, path: Path | None = None) -> dict[str, float]:
        """One transfer of ``size`` bytes from a to b: MB/s and CPU% of each side."""
        b_arm = await pair.b.call("bulk_arm", n=size)
        del b_arm
        if pair.key.startswith("p2p"):
            sent = await pair.a.call("share", path=str(path or self.file(size)), timeout=900)
        else:
            sent = await pair.a.call("bulk_send", n=size, timeout=900)
        got = await pair.b.call("bulk_wait", timeout=900)
        wall = got["t_done"] - sent["t0"]
        out = {
            "mb_s": size / MB / wall,
            "cpu_sender": 100 * (sent["cpu1"] - sent["cpu0"]) / max(1e-6, sent["t1"] - sent["t0"]),
            "cpu_receiver": 100
            * (got["cpu_done"] - got["cpu_arm"])
            / max(1e-6, got["t_done"] - got["t_arm"]),
            "sender_maxrss_mb": sent.get("maxrss_mb", 0.0),
            "receiver_maxrss_mb": got["maxrss_mb"],
        }
        if "t_offer" in got:
            out["mb_s_from_offer"] = size / MB / (got["t_done"] - got["t_offer"])
        return out

    async def throughput(self) -> None:
        table: dict[str, dict[str, list[dict[str, float]]]] = {}
        for size_mb in self.cfg.sizes_mb:
            self.file(size_mb * MB)
        for _ in range(self.cfg.runs):
            for size_mb in self.cfg.sizes_mb:
                for key, pair in self.pairs.items():
                    row = await self.bulk(pair, size_mb * MB)
                    table.setdefault(f"{size_mb}MB", {}).setdefault(key, []).append(row)
        out: dict[str, Any] = {}
        for size_key, per in table.items():
            out[size_key] = {
                key: {name: stats([r[name] for r in rows]) for name in rows[0]}
                for key, rows in per.items()
            }
            self.log(
                f"throughput {size_key} MB/s: "
                + ", ".join(f"{k} {v['mb_s']['median']:.1f}" for k, v in out[size_key].items())
            )
        self.results["throughput"] = out

    async def dataframe(self) -> None:
        keys = [k for k in ("p2p_nb", "p2p_nb_uvloop") if k in self.pairs]
        made = await asyncio.gather(
            *(self.pairs[k].a.call("make_df", mb=self.cfg.df_mb, timeout=300) for k in keys)
        )
        csv_bytes = int(made[0]["csv_bytes"])
        ours: dict[str, list[float]] = {k: [] for k in keys}
        wire: list[float] = []
        raw: list[float] = []
        for _ in range(self.cfg.runs):
            for key in keys:
                pair = self.pairs[key]
                await pair.b.call("bulk_arm", n=0)
                sent = await pair.a.call("share_df", timeout=900)
                got = await pair.b.call("bulk_wait", timeout=900)
                ours[key].append(csv_bytes / MB / (got["t_done"] - sent["t0"]))
                wire.append(sent["wire_bytes"])
            raw.append((await self.bulk(self.pairs["raw_aiortc"], csv_bytes))["mb_s"])
        self.results["dataframe"] = {
            "csv_mb": round(csv_bytes / MB, 2),
            "parquet_zstd_mb": round(statistics.median(wire) / MB, 2),
            "rows": made[0]["rows"],
            **{f"{k}_user_mb_s": stats(v) for k, v in ours.items()},
            "raw_aiortc_csv_mb_s": stats(raw),
        }
        self.log(f"dataframe: {self.results['dataframe']}")

    async def big_file(self) -> None:
        pair = self.pairs["p2p_nb"]
        size = self.cfg.big_mb * MB
        path = self.file(size)
        before = await asyncio.gather(pair.a.call("info"), pair.b.call("info"))
        rows = [await self.bulk(pair, size, path) for _ in range(self.cfg.big_runs)]
        after = await asyncio.gather(pair.a.call("info"), pair.b.call("info"))
        path.unlink()
        self.results["big_file"] = {
            "file_mb": self.cfg.big_mb,
            "runs": self.cfg.big_runs,
            "mb_s": stats([r["mb_s"] for r in rows]),
            "sender_peak_rss_mb": round(after[0]["maxrss_mb"], 1),
            "sender_peak_growth_mb": round(after[0]["maxrss_mb"] - before[0]["maxrss_mb"], 1),
            "receiver_peak_rss_mb": round(after[1]["maxrss_mb"], 1),
            "receiver_peak_growth_mb": round(after[1]["maxrss_mb"] - before[1]["maxrss_mb"], 1),
        }
        self.log(f"big file: {self.results['big_file']}")

    async def close_pairs(self) -> None:
        workers = [w for p in self.pairs.values() for w in (p.a, p.b)]
        await asyncio.gather(*(w.close() for w in workers))

    async def mesh(self) -> None:
        sizes = self.cfg.mesh_sizes
        pool = await asyncio.gather(*(self.worker(f"mesh-{i}", "p2p") for i in range(max(sizes))))
        await asyncio.gather(*(w.ready(timeout=300) for w in pool))
        ready_rss = [w.info["rss_mb"] for w in pool]
        times: dict[int, list[float]] = {n: [] for n in sizes}
        rss: dict[int, list[float]] = {n: [] for n in sizes}
        idle: list[float] = []
        idle_total: list[float] = []
        per_conn: list[float] = []
        first_room: dict[int, tuple[float, int]] = {}
        for run in range(self.cfg.mesh_runs):
            previous = 0
            for n in sizes:
                members = pool[:n]
                room = f"mesh{n}-{run}"
                t0 = time.monotonic()
                # One after another: joins that overlap lose peer_joined events
                # (p2p_nb.app drops signaling events until its join reply is handled).
                for w in members:
                    await w.call("join", room=room)
                done = await asyncio.gather(
                    *(w.call("wait_peers", n=n - 1, timeout=120) for w in members)
                )
                times[n].append(max(d["t"] for d in done) - t0)
                infos = await asyncio.gather(*(w.call("info") for w in members))
                rss[n].append(statistics.median(i["rss_mb"] for i in infos))
                if run == 0:
                    # growth from a process's first room (where everything a
                    # connection needs got loaded, as in the raw baseline's
                    # first connection) to the largest room
                    for i in range(previous, n):
                        first_room[i] = (infos[i]["rss_mb"], n)
                    if n == sizes[-1]:
                        per_conn += [
                            (infos[i]["rss_mb"] - rss0) / (n - n0)
                            for i, (rss0, n0) in first_room.items()
                            if n0 < n
                        ]
                if n == 8 or (n == sizes[-1] and 8 not in sizes):
                    cpu = await self.idle_cpu([w.pid for w in members])
                    idle.append(statistics.median(cpu))
                    idle_total.append(sum(cpu))
                await asyncio.gather(*(w.call("leave", timeout=60) for w in members))
                previous = n
                self.log(f"mesh {n}: {times[n][-1]:.2f} s, RSS median {rss[n][-1]:.1f} MB")
        await asyncio.gather(*(w.close() for w in pool))
        self.results["mesh"] = {
            str(n): {"time_s": stats(times[n]), "rss_mb": stats(rss[n])} for n in sizes
        }
        self.results["process_rss"] = {
            "p2p_nb_connected_idle_mb": stats(ready_rss),
            f"p2p_nb_in_{sizes[-1]}_room_mb": stats(rss[sizes[-1]]),
            "import_aiortc_only_mb": await self.import_rss("import aiortc"),
            "import_p2p_nb_app_mb": await self.import_rss("import p2p_nb.app"),
            "python_only_mb": await self.import_rss("pass"),
        }
        self.results["memory_per_connection"] = {
            "p2p_nb": {**stats(per_conn), "connections": sizes[-1] - 1, "unit": "MB"},
            "raw_aiortc": await self.raw_memory(sizes[-1] - 1),
        }
        self.results["idle_cpu"] = {
            "peers": 8 if 8 in sizes else sizes[-1],
            "seconds": self.cfg.idle_seconds,
            "per_process_pct": stats(idle),
            "room_total_pct": stats(idle_total),
        }

    async def idle_cpu(self, pids: list[int]) -> list[float]:
        procs = [psutil.Process(p) for p in pids]
        await asyncio.sleep(1.0)  # let the last connection's work settle
        before = [sum(p.cpu_times()[:2]) for p in procs]
        t0 = time.monotonic()
        await asyncio.sleep(self.cfg.idle_seconds)
        wall = time.monotonic() - t0
        return [
            100 * (sum(p.cpu_times()[:2]) - b) / wall for p, b in zip(procs, before, strict=True)
        ]

    async def import_rss(self, statement: str) -> float:
        code = f"{statement}\nprint(open('/proc/self/status').read())"
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        line = next(x for x in out.stdout.splitlines() if x.startswith("VmRSS:"))
        return round(int(line.split()[1]) / 1024, 1)

    async def raw_memory(self, conns: int) -> dict[str, Any]:
        per: list[float] = []
        for run in range(self.cfg.raw_mem_runs):
            a, b = await asyncio.gather(
                self.worker(f"rawmem-{run}-a", "raw"), self.worker(f"rawmem-{run}-b", "raw")
            )
            await asyncio.gather(a.ready(), b.ready())
            await self.raw_connect(a, b, 0)  # loads everything a connection needs
            rss0 = (await a.call("info"))["rss_mb"]
            for k in range(1, conns):
                await self.raw_connect(a, b, k)
            rss1 = (await a.call("info"))["rss_mb"]
            per.append((rss1 - rss0) / (conns - 1))
            await asyncio.gather(a.close(), b.close())
        return {**stats(per), "connections": conns, "unit": "MB"}


Step = Callable[[], Awaitable[None]]


async def run_suite(
    cfg: Config, reg: Registry, log: Callable[[str], None], only: list[str] | None = None
) -> dict[str, Any]:
    suite = Suite(cfg, reg, log)
    started = time.monotonic()
    try:
        async with asyncio.timeout(cfg.deadline):
            await suite.start()
            log(f"started {len(suite.pairs)} pairs in {time.monotonic() - started:.1f} s")
            steps: list[Step] = [
                suite.pair_setup,
                suite.link_pairs,
                suite.message_rate,
                suite.latency,
                suite.throughput,
                suite.big_file,
                suite.dataframe,
                suite.close_pairs,
                suite.mesh,
            ]
            for step in steps:
                if only and step.__name__ not in (*only, "link_pairs", "close_pairs"):
                    continue
                t = time.monotonic()
                await step()
                log(f"  ({step.__name__}: {time.monotonic() - t:.1f} s)")
    finally:
        for path in suite.tmp.glob("*"):
            path.unlink()
        suite.tmp.rmdir()
    suite.results["meta"] = {
        "config": asdict(cfg),
        "variants": {k: VARIANTS[k] for k in suite.pairs},
        "seconds": round(time.monotonic() - started, 1),
    }
    return suite.results
