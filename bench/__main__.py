"""``python -m bench [--quick] [--out DIR]``: every figure, with its baselines, in one run.

``python -m bench --network [--quick] [--out DIR]`` runs the matrix over an
emulated network instead (bench/network.py; needs root).
``python -m bench --browser [--quick] [--out DIR]`` measures the web client in
headless Chromium beside the kernels (bench/browser.py).

Run it inside a loopback-only network namespace (aioice never offers 127.0.0.1):

    unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/8 dev lo; \\
        exec .venv/bin/python -m bench'

Prints a table, writes ``results.json`` and ``results.png`` to ``--out``
(default ``bench/results/``). Needs the ``bench`` extra: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def missing_extras() -> list[str]:
    return [m for m in ("matplotlib", "psutil") if importlib.util.find_spec(m) is None]


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((x.split(":", 1)[1].strip() for x in f if x.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    if "--network" in sys.argv[1:]:
        if missing_extras():
            print("python -m bench --network needs the bench extra", file=sys.stderr)
            return 2
        from .network import main as network_main

        return network_main([a for a in sys.argv[1:] if a != "--network"])
    if "--browser" in sys.argv[1:]:
        if missing_extras():
            print("python -m bench --browser needs the bench extra", file=sys.stderr)
            return 2
        from .browser import main as browser_main

        return browser_main([a for a in sys.argv[1:] if a != "--browser"])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (< 2 min)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-uvloop", action="store_true", help="skip the uvloop variants")
    parser.add_argument("--only", nargs="+", help="run only these steps (for debugging)")
    args = parser.parse_args()
    missing = missing_extras()
    if missing:
        print(
            f"python -m bench needs {', '.join(missing)}: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    from .procs import run_logs
    from .report import chart, evaluate, table
    from .suite import Config, run_suite

    cfg = Config.quick_config() if args.quick else Config()
    cfg.uvloop = not args.no_uvloop
    reg, log = run_logs(args.out, "logs")

    async def run() -> dict[str, Any]:
        try:
            return await run_suite(cfg, reg, log, args.only)
        finally:
            await reg.stop_all()

    info = machine()
    results = asyncio.run(run())
    if args.only:
        print(json.dumps(results, indent=1))
        return 0
    results["meta"]["machine"] = info
    results["meta"]["command"] = "python -m bench" + (" --quick" if args.quick else "")
    results["targets"] = evaluate(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    chart(results, args.out / "results.png")
    print(table(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
