"""``python -m bench.profile``: py-spy both ends of a small-message burst (or a file).

    unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/8 dev lo; \\
        exec .venv/bin/python -m bench.profile --kind p2p -n 100000'

Starts one pair of ``bench.worker`` processes (``p2p``: through the signaling
server and the public API; ``raw``: a bare aiortc data channel), sends ``-n``
messages of ``--size`` bytes (or, with ``--file-mb``, a file) from one to the
other while ``py-spy record``
samples both processes, and prints the rate and, per side, the functions with
the most samples (self and inclusive). The raw profiles are kept in ``--out``
(py-spy's ``raw`` format: one collapsed stack per line, for flame graphs).
This is how the message-rate figure was diagnosed: the profile, not a guess.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
from pathlib import Path

from .procs import Registry, signal_server
from .suite import MB, Config, Suite


def summarize(path: Path, top: int) -> str:
    """Top frames of a py-spy ``raw`` profile, by self and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive (below the event loop):")
    deep = [(f, n) for f, n in incl.most_common() if n < 0.95 * total]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in deep[:top]]
    return "\n".join(lines)


async def profile(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    reg = Registry(args.out / "logs")
    suite = Suite(Config(), reg, print)
    try:
        suite.url, suite.token = await signal_server(reg)
        extra = ("--uvloop",) if args.uvloop else ()
        a = await suite.worker("sender", args.kind, *extra)
        b = await suite.worker("receiver", args.kind, *extra)
        await asyncio.gather(a.ready(), b.ready())
        if args.kind == "p2p":
            await suite.p2p_join_pair(a, b, "profile")
        else:
            await suite.raw_connect(a, b, 0)
        await b.call("arm", n=1000)  # warm up: imports, first frames
        await a.call("msg_send", n=1000, size=args.size)
        await b.call("wait_count")
        spies = [
            await asyncio.create_subprocess_exec(
                args.py_spy,
                "record",
                "--pid",
                str(w.pid),
                "--format",
                "raw",
                "--rate",
                "500",
                "--output",
                str(args.out / f"{args.kind}-{side}.txt"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for w, side in ((a, "sender"), (b, "receiver"))
        ]
        variant = f"{args.kind}{' + uvloop' if args.uvloop else ''}"
        if args.file_mb:
            size = int(args.file_mb * MB)
            await b.call("bulk_arm", n=size)
            if args.kind == "p2p":
                sent = await a.call("share", path=str(suite.file(size)), timeout=600)
            else:
                sent = await a.call("bulk_send", n=size, timeout=600)
            got = await b.call("bulk_wait", timeout=600)
            done = f"{size / MB / (got['t_done'] - sent['t0']):.1f} MB/s"
            result = f"{variant}: a file of {args.file_mb:g} MB: {done}"
        else:
            await b.call("arm", n=args.n)
            sent = await a.call("msg_send", n=args.n, size=args.size, timeout=600)
            got = await b.call("wait_count", timeout=600)
            result = (
                f"{variant}: {args.n} messages of {args.size} B: "
                f"{args.n / (got['t'] - sent['t0']):.0f} msg/s delivered (the sender's "
                f"loop ran at {args.n / (sent['t1'] - sent['t0']):.0f} msg/s)"
            )
        for spy in spies:  # SIGINT: py-spy writes what it sampled and exits
            spy.send_signal(2)
        await asyncio.gather(*(spy.wait() for spy in spies))
        print(result)
        for side in ("sender", "receiver"):
            print(summarize(args.out / f"{args.kind}-{side}.txt", args.top))
    finally:
        await reg.stop_all()
        shutil.rmtree(suite.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--kind", choices=("p2p", "raw"), default="p2p")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("-n", type=int, default=100_000, help="messages in the burst")
    parser.add_argument("--size", type=int, default=100, help="bytes of text per message")
    parser.add_argument(
        "--file-mb", type=float, default=0, help="profile a file transfer of this size instead"
    )
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args()
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(args.py_spy).exists():
        print("py-spy not found: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    asyncio.run(profile(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
