"""The suite's results as a text table, a list of targets met or missed, and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIGURES = (
    "pair_setup",
    "message_rate",
    "rtt",
    "throughput",
    "dataframe",
    "mesh",
    "memory_per_connection",
    "process_rss",
    "big_file",
    "idle_cpu",
)
"""Every figure ``results.json`` holds (tests check each is there, with numbers)."""


def _s(d: dict[str, Any], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"


def table(r: dict[str, Any]) -> str:
    names = r["meta"]["variants"]
    out = [f"p2p-nb benchmark ({r['meta']['command']}), median (min-max) of n runs"]
    ps = r["pair_setup"]
    out.append("\npair setup, join -> data channel open (ms)      median   p95    min-max")
    for key, label in (
        ("p2p_nb", "p2p-nb via signaling"),
        ("raw_aiortc", "raw aiortc, direct SDP"),
    ):
        d = ps[key]
        out.append(
            f"  {label:<42} {d['median']:6.1f} {d['p95']:6.1f}  {d['min']:.1f}-{d['max']:.1f}"
        )
    out.append(f"\n{'link, 100 B ordered':<24} {'msg/s':>22} {'RTT p50 ms':>22} {'RTT p99 ms':>22}")
    for key, label in names.items():
        mr, rt = r["message_rate"][key], r["rtt"][key]
        out.append(
            f"  {label:<22} {_s(mr, '{:.0f}'):>22} {_s(rt['p50'], '{:.3f}'):>22} "
            f"{_s(rt['p99'], '{:.3f}'):>22}"
        )
    out.append("\nfile throughput MB/s (10^6 B/s), CPU% sender / receiver")
    sizes = list(r["throughput"])
    out.append(f"  {'':<22}" + "".join(f"{s:>34}" for s in sizes))
    for key, label in names.items():
        cells = []
        for s in sizes:
            d = r["throughput"][s][key]
            tx, rx = d["cpu_sender"]["median"], d["cpu_receiver"]["median"]
            cells.append(f"{_s(d['mb_s'])} {tx:3.0f}/{rx:3.0f}%")
        out.append(f"  {label:<22}" + "".join(f"{c:>34}" for c in cells))
    df = r["dataframe"]
    out.append(
        f"\nDataFrame, {df['csv_mb']} MB as CSV ({df['parquet_zstd_mb']} MB as Parquet+zstd), "
        "user-data MB/s"
    )
    for key, val in df.items():
        if isinstance(val, dict):
            out.append(f"  {key:<34} {_s(val)}")
    out.append("\nfull mesh           time until every pair is open (s)   RSS per process (MB)")
    for n, d in r["mesh"].items():
        out.append(f"  N = {n:<4} {_s(d['time_s'], '{:.2f}'):>38} {_s(d['rss_mb']):>24}")
    mp = r["memory_per_connection"]
    out.append("\nmemory per additional connection (MB)")
    for key, d in mp.items():
        out.append(f"  {key:<22} {_s(d, '{:.2f}')}  ({d['connections']} connections)")
    out.append("\nprocess RSS (MB)")
    for key, d in r["process_rss"].items():
        out.append(f"  {key:<30} {_s(d) if isinstance(d, dict) else d}")
    bf = r["big_file"]
    out.append(
        f"\nsending {bf['file_mb']} MB: sender peak RSS {bf['sender_peak_rss_mb']} MB "
        f"(+{bf['sender_peak_growth_mb']}), receiver {bf['receiver_peak_rss_mb']} MB "
        f"(+{bf['receiver_peak_growth_mb']}), {_s(bf['mb_s'])} MB/s"
    )
    ic = r["idle_cpu"]
    out.append(
        f"idle CPU, {ic['peers']}-peer room over {ic['seconds']} s: per process "
        f"{_s(ic['per_process_pct'], '{:.2f}')} %, "
        f"whole room {_s(ic['room_total_pct'], '{:.2f}')} %"
    )
    out.append("\ntargets")
    for t in r["targets"]:
        out.append(
            f"  [{'met ' if t['met'] else 'MISS'}] {t['name']}: {t['value']} ({t['target']})"
        )
    return "\n".join(out)


def evaluate(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def target(name: str, value: float, goal: str, met: bool) -> None:
        out.append({"name": name, "value": round(value, 2), "target": goal, "met": bool(met)})

    med = lambda d: d["median"]  # noqa: E731
    target(
        "pair setup median ms",
        med(r["pair_setup"]["p2p_nb"]),
        "<= 60",
        med(r["pair_setup"]["p2p_nb"]) <= 60,
    )
    raw_rate = med(r["message_rate"]["raw_aiortc"])
    for key in ("p2p_nb", "p2p_nb_uvloop"):
        if key in r["message_rate"]:
            ratio = med(r["message_rate"][key]) / raw_rate
            target(f"{key} msg rate / raw aiortc", ratio, ">= 0.8", ratio >= 0.8)
    for size, per in r["throughput"].items():
        raw = med(per["raw_aiortc"]["mb_s"])
        for key in ("p2p_nb", "p2p_nb_uvloop"):
            if key in per:
                ratio = med(per[key]["mb_s"]) / raw
                goal, ok = (">= 0.9", ratio >= 0.9) if key == "p2p_nb" else ("> 1", ratio > 1)
                target(f"{key} throughput {size} / raw aiortc", ratio, goal, ok)
    mp = med(r["memory_per_connection"]["p2p_nb"])
    target("memory per connection MB", mp, "<= 1", mp <= 1)
    prss = med(r["process_rss"]["p2p_nb_connected_idle_mb"])
    target("peer process RSS MB (connected, idle)", prss, "<= 100", prss <= 100)
    last = list(r["mesh"])[-1]
    big = med(r["mesh"][last]["rss_mb"])
    target(f"peer process RSS MB in a {last}-peer room", big, "<= 100", big <= 100)
    grow = r["big_file"]["sender_peak_growth_mb"]
    target(f"sender RSS growth sending {r['big_file']['file_mb']} MB", grow, "<= 32", grow <= 32)
    df = r["dataframe"]
    raw_df = med(df["raw_aiortc_csv_mb_s"])
    for key in ("p2p_nb", "p2p_nb_uvloop"):
        if f"{key}_user_mb_s" in df:
            ratio = med(df[f"{key}_user_mb_s"]) / raw_df
            target(f"{key} DataFrame user MB/s / raw aiortc CSV", ratio, ">= 3", ratio >= 3)
    mesh_t = med(r["mesh"][last]["time_s"])
    goal_ok = mesh_t < 10 if last == "32" else True
    target(f"{last} peers fully meshed, s", mesh_t, "< 10 (for 32)", goal_ok)
    return out


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = r["meta"]["variants"]
    keys = list(names)
    colors = dict(zip(keys, ["#1f77b4", "#6baed6", "#d62728", "#fc9272", "#2ca02c"], strict=False))
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"p2p-nb benchmark ({r['meta']['command']}): median, bars = min-max")

    def bars(ax: Any, labels: list[str], ds: list[dict[str, Any]], cols: list[str]) -> None:
        meds = [d["median"] for d in ds]
        err = [
            [m - d["min"] for m, d in zip(meds, ds, strict=True)],
            [d["max"] - m for m, d in zip(meds, ds, strict=True)],
        ]
        ax.bar(labels, meds, yerr=err, color=cols, capsize=3)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)

    ax = axes[0][0]
    ps = r["pair_setup"]
    bars(
        ax,
        ["p2p-nb\n(signaling)", "raw aiortc\n(direct SDP)"],
        [ps["p2p_nb"], ps["raw_aiortc"]],
        [colors["p2p_nb"], colors["raw_aiortc"]],
    )
    ax.set_title("pair setup, join -> open (ms)")
    ax = axes[0][1]
    bars(
        ax,
        [names[k] for k in keys],
        [r["message_rate"][k] for k in keys],
        [colors[k] for k in keys],
    )
    ax.set_title("100 B messages/s, one link")
    ax = axes[0][2]
    bars(
        ax, [names[k] for k in keys], [r["rtt"][k]["p50"] for k in keys], [colors[k] for k in keys]
    )
    ax.scatter(
        [names[k] for k in keys],
        [r["rtt"][k]["p99"]["median"] for k in keys],
        marker="_",
        s=300,
        color="black",
        label="p99",
        zorder=3,
    )
    ax.legend()
    ax.set_title("round-trip time p50 (ms), p99 marked")
    ax = axes[1][0]
    sizes = list(r["throughput"])
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ds = [r["throughput"][s][k]["mb_s"] for s in sizes]
        xs = [j + i * width for j in range(len(sizes))]
        meds = [d["median"] for d in ds]
        err = [
            [m - d["min"] for m, d in zip(meds, ds, strict=True)],
            [d["max"] - m for m, d in zip(meds, ds, strict=True)],
        ]
        ax.bar(xs, meds, width, yerr=err, color=colors[k], label=names[k], capsize=2)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(sizes))], sizes)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("file throughput (MB/s, log)")
    ax = axes[1][1]
    ns = [int(n) for n in r["mesh"]]
    ax.errorbar(
        ns,
        [r["mesh"][str(n)]["time_s"]["median"] for n in ns],
        yerr=[
            [
                r["mesh"][str(n)]["time_s"]["median"] - r["mesh"][str(n)]["time_s"]["min"]
                for n in ns
            ],
            [
                r["mesh"][str(n)]["time_s"]["max"] - r["mesh"][str(n)]["time_s"]["median"]
                for n in ns
            ],
        ],
        marker="o",
        capsize=3,
        color=colors["p2p_nb"],
    )
    ax.set_xlabel("peers (one process each)")
    ax.set_ylabel("s until every pair is open")
    ax2 = ax.twinx()
    ax2.plot(ns, [r["mesh"][str(n)]["rss_mb"]["median"] for n in ns], marker="s", color="gray")
    ax2.set_ylabel("RSS per process (MB)", color="gray")
    ax.set_title("full mesh")
    ax = axes[1][2]
    df = r["dataframe"]
    labels, ds, cols = [], [], []
    for k in ("p2p_nb", "p2p_nb_uvloop"):
        if f"{k}_user_mb_s" in df:
            labels.append(f"{names[k]}\nParquet+zstd")
            ds.append(df[f"{k}_user_mb_s"])
            cols.append(colors[k])
    labels.append("raw aiortc\nCSV bytes")
    ds.append(df["raw_aiortc_csv_mb_s"])
    cols.append(colors["raw_aiortc"])
    bars(ax, labels, ds, cols)
    ax.set_title(f"DataFrame of {df['csv_mb']} MB CSV: user-data MB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
