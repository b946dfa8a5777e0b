"""``python -m bench --browser [--quick] [--out DIR]``: the web client beside the kernels.

In one run, against one ``p2p-nb-signal`` process:

- file throughput kernel → kernel (two ``bench.worker`` processes, as in
  ``python -m bench``), browser → kernel and kernel → browser (headless Debian
  Chromium driven through Playwright, the page the server serves, a worker
  process as the kernel), each timed from the start of the share (the
  sender hashes the file first, on every side) until the receiver has the
  whole file with its SHA-256 checked;
- kernel → browser in both of the page's ways to keep what it receives: in
  Blobs handed over as a download at the end ("download", what a browser
  without the File System Access API does, and Chromium below 64 MiB), and
  written to disk as it arrives ("disk": the user picked a place; here the
  picker is replaced by a file in the origin's private file system, the same
  ``FileSystemWritableFileStream``, since a headless browser shows no dialog);
- the page's memory while it receives a big file (1 GB; ``--quick``: 20 MB)
  both ways: the JS heap (DevTools ``Performance.getMetrics``), the RSS and
  PSS of the page's renderer process and of the browser process (from
  ``/proc``: Chromium keeps Blob data in the browser process, and on disk
  beyond a limit), sampled every 0.5 s, and once more 5 s after the file is
  saved. ``performance.measureUserAgentSpecificMemory`` needs a
  cross-origin isolated page, which the web client is not; the JSON says so.

Run it inside a loopback-only network namespace, as the other benchmarks:

    unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/8 dev lo; \\
        exec .venv/bin/python -m bench --browser'

Writes ``browser.json`` and ``browser.png`` (the memory while receiving) to
``--out`` (default ``bench/results/``). Chromium comes from apt
(``/usr/bin/chromium``); Playwright never downloads a browser here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, CDPSession, Page, async_playwright

from .procs import Registry, Worker, run_logs, signal_server

MB = 1_000_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    # As tests/browser.py starts it (see there for why each is needed): headless
    # as root, nothing in the background, no throttling of a page not in front,
    # and loopback ICE candidates inside the namespace.
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-default-browser-check",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--mute-audio",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
)
SAMPLE_EVERY = 0.5
"""Seconds between two memory samples while the page receives."""
SETTLE = 5.0
"""Seconds after a big file is saved (downloaded, or closed on disk) until the
last sample: what the browser still holds then, once freed memory could go."""
DISK_PICKER = """
// The save dialog of the File System Access API, answered with a file in the
// origin's private file system: the page writes to it through the same
// FileSystemWritableFileStream as to a place the user picked.
window.showSaveFilePicker = async ({ suggestedName }) =>
  (await navigator.storage.getDirectory()).getFileHandle(suggestedName, { create: true });
"""
DIRECTIONS = {
    "kernel_to_kernel": "kernel → kernel",
    "browser_to_kernel": "browser → kernel",
    "kernel_to_browser_download": "kernel → browser (download)",
    "kernel_to_browser_disk": "kernel → browser (to disk)",
}


@dataclass
class Config:
    quick: bool = False
    file_mb: int = 100
    runs: int = 3
    big_mb: int = 1000
    deadline: float = 2700.0

    @classmethod
    def quick_config(cls) -> Config:
        return cls(quick=True, file_mb=5, runs=1, big_mb=20, deadline=240.0)


def stats(xs: list[float]) -> dict[str, float]:
    ys = sorted(xs)
    return {
        "median": round(statistics.median(ys), 3),
        "min": round(ys[0], 3),
        "max": round(ys[-1], 3),
        "n": len(ys),
    }


# ------------------------------------------------------------------ processes
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def chromium_processes(root: int) -> dict[int, str]:
    """Every process under Chromium's ``root`` with its ``--type`` (browser: none)."""
    tree = _children()
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                # Chromium rewrites its children's argv as one string: no NULs
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        typed = re.search(r"--type=([\w-]+)", cmdline)
        found[pid] = typed.group(1) if typed else "browser"
        todo += tree.get(pid, [])
    return found


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and its anonymous part (``/proc/PID/status``: memory of its own, not
    pages of files it maps) and PSS (``smaps_rollup``) of one process, MB."""
    out = {"rss_mb": 0.0, "rss_anon_mb": 0.0, "pss_mb": 0.0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) * 1024 / MB
                elif line.startswith("RssAnon:"):
                    out["rss_anon_mb"] = int(line.split()[1]) * 1024 / MB
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["pss_mb"] = int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Chromium:
    """Our own Debian Chromium process, reached over DevTools."""

    def __init__(self, tmp: Path) -> None:
        self.profile = tmp / "chromium-profile"
        self.log = (tmp / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *CHROMIUM_ARGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def cdp_url(self, timeout: float = 30) -> str:
        """Chromium writes the port it chose into ``DevToolsActivePort``."""
        async with asyncio.timeout(timeout):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.process.returncode}")
                try:
                    port = (self.profile / "DevToolsActivePort").read_text().split()[0]
                    return f"http://127.0.0.1:{int(port)}"
                except (OSError, IndexError, ValueError):
                    await asyncio.sleep(0.05)

    def renderers(self) -> set[int]:
        return {p for p, k in chromium_processes(self.process.pid).items() if k == "renderer"}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


# ------------------------------------------------------------------ the page
class WebPeer:
    """The web client in a Chromium page, joined to a room, driven as a person would."""

    def __init__(self, chromium: Chromium, browser: Browser, page: Page, cdp: CDPSession) -> None:
        self.chromium, self.browser, self.page, self.cdp = chromium, browser, page, cdp
        self.renderer = 0

    @classmethod
    async def open(cls, chromium: Chromium, browser: Browser, url: str) -> WebPeer:
        before = chromium.renderers()
        context = await browser.new_context(accept_downloads=True)
        # Chromium gathers no ICE candidate in a namespace without a default
        # route unless the page may use camera and microphone (FIELD-NOTES)
        await context.grant_permissions(["camera", "microphone"])
        await context.add_init_script(DISK_PICKER)
        context.set_default_timeout(60_000)
        page = await context.new_page()
        await page.goto(url)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        peer = cls(chromium, browser, page, cdp)
        new = chromium.renderers() - before
        # The page's own renderer is the one its navigation started
        peer.renderer = max(new) if new else max(chromium.renderers(), default=0)
        return peer

    async def join(self, name: str, room: str) -> None:
        await self.page.get_by_label("Your name").fill(name)
        await self.page.get_by_label("Room", exact=True).fill(room)
        await self.page.get_by_role("button", name="Join").click()
        await self.page.get_by_role("button", name="Leave").wait_for()

    async def pick(self, path: Path) -> float:
        """Choose ``path`` in "Files to share" (DevTools, as tests/test_web_client.py:
        Playwright's own upload copies the bytes through the protocol). Returns
        the moment the page got it."""
        input_id = await self.page.get_by_label("Files to share").get_attribute("id")
        document = await self.cdp.send("DOM.getDocument", {"depth": 0})
        node = await self.cdp.send(
            "DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": f"#{input_id}"}
        )
        t0 = time.monotonic()
        await self.cdp.send(
            "DOM.setFileInputFiles", {"nodeId": node["nodeId"], "files": [str(path)]}
        )
        return t0

    async def memory(self) -> dict[str, float]:
        """One sample: the page's JS heap, its renderer's and the browser's memory."""
        metrics = await self.cdp.send("Performance.getMetrics")
        values = {m["name"]: m["value"] for m in metrics["metrics"]}
        processes = chromium_processes(self.chromium.process.pid)
        renderer = memory_mb(self.renderer)
        main = memory_mb(self.chromium.process.pid)
        return {
            "js_heap_used_mb": values.get("JSHeapUsedSize", 0.0) / MB,
            "js_heap_total_mb": values.get("JSHeapTotalSize", 0.0) / MB,
            "renderer_rss_mb": renderer["rss_mb"],
            "renderer_pss_mb": renderer["pss_mb"],
            "browser_rss_mb": main["rss_mb"],
            "browser_rss_anon_mb": main["rss_anon_mb"],
            "chromium_pss_total_mb": sum(memory_mb(p)["pss_mb"] for p in processes),
        }

    async def user_agent_memory(self) -> str:
        """What ``performance.measureUserAgentSpecificMemory`` says here."""
        result: str = await self.page.evaluate(
            """async () => {
              if (!self.crossOriginIsolated)
                return "unavailable: the page is not cross-origin isolated";
              const m = await performance.measureUserAgentSpecificMemory();
              return `${m.bytes} bytes`;
            }"""
        )
        return result


# ------------------------------------------------------------------ the run
class BrowserBench:
    def __init__(self, cfg: Config, reg: Registry, log: Callable[[str], None]) -> None:
        self.cfg, self.reg, self.log = cfg, reg, log
        self.tmp = Path(tempfile.mkdtemp(prefix="p2p-bench-browser-"))
        self.results: dict[str, Any] = {}
        self._names = 0

    def data(self, size: int) -> Path:
        path = self.tmp / f"data-{size}.bin"
        if not path.exists():
            block = os.urandom(MB)
            with path.open("wb") as f:
                for _ in range(size // MB):
                    f.write(block)
                f.write(block[: size % MB])
        return path

    def named(self, size: int, prefix: str) -> Path:
        """A new name for the same bytes (a hard link): every transfer's row and
        Accept button in the page is its own."""
        self._names += 1
        path = self.tmp / f"{prefix}-{self._names}.bin"
        os.link(self.data(size), path)
        return path

    async def kernel_to_kernel(self, a: Worker, b: Worker, size: int) -> dict[str, float]:
        await b.call("bulk_arm", n=size)
        path = self.named(size, "k2k")
        sent = await a.call("share", path=str(path), timeout=900)
        got = await b.call("bulk_wait", timeout=900)
        path.unlink()
        return {
            "mb_s": size / MB / (got["t_done"] - sent["t0"]),
            "cpu_sender_pct": 100 * (sent["cpu1"] - sent["cpu0"]) / (sent["t1"] - sent["t0"]),
            "cpu_receiver_pct": 100
            * (got["cpu_done"] - got["cpu_arm"])
            / (got["t_done"] - got["t_arm"]),
        }

    async def browser_to_kernel(self, web: WebPeer, kernel: Worker, size: int) -> dict[str, float]:
        await kernel.call("bulk_arm", n=size)
        path = self.named(size, "b2k")
        main = web.chromium.process.pid
        cpu0, main0 = cpu_seconds(web.renderer), cpu_seconds(main)
        t0 = await web.pick(path)
        got = await kernel.call("bulk_wait", timeout=900)
        cpu1, main1 = cpu_seconds(web.renderer), cpu_seconds(main)
        path.unlink()
        wall = got["t_done"] - t0
        return {
            "mb_s": size / MB / wall,
            "cpu_sender_pct": 100 * (cpu1 - cpu0) / wall,  # the page's renderer
            "cpu_browser_process_pct": 100 * (main1 - main0) / wall,  # its sockets
            "cpu_receiver_pct": 100
            * (got["cpu_done"] - got["cpu_arm"])
            / (got["t_done"] - got["t_arm"]),
        }

    async def kernel_to_browser(
        self, web: WebPeer, kernel: Worker, size: int, mode: str, sample: bool = False
    ) -> dict[str, Any]:
        """One file from the kernel to the page, kept in Blobs ("download") or
        written to disk ("disk"); with ``sample``, the page's memory meanwhile."""
        page = web.page
        await page.evaluate(f"window.p2pStreamToDiskBytes = {0 if mode == 'disk' else 'Infinity'}")
        path = self.named(size, f"k2b-{mode}")
        samples: list[dict[str, float]] = []
        baseline = await web.memory()
        main = web.chromium.process.pid
        cpu0, main0 = cpu_seconds(web.renderer), cpu_seconds(main)
        share = asyncio.ensure_future(kernel.call("share", path=str(path), timeout=900))
        accept = page.get_by_role("button", name=f"Accept {path.name}")
        download = None
        if mode == "download":
            async with page.expect_download(timeout=900_000) as download_info:
                await accept.click()
                t_accept = time.monotonic()
                sampler = asyncio.ensure_future(self.sample(web, samples, share, t_accept))
                sent = await share
            download = await download_info.value
        else:
            await accept.click()
            t_accept = time.monotonic()
            sampler = asyncio.ensure_future(self.sample(web, samples, share, t_accept))
            sent = await share
        cpu1, main1 = cpu_seconds(web.renderer), cpu_seconds(main)
        await sampler
        after = await web.memory()
        if set(sent["result"].values()) != {"done"}:
            raise RuntimeError(f"kernel → browser {path.name}: {sent['result']}")
        if download is not None:
            saved = await download.path()
            if saved.stat().st_size != size:
                raise RuntimeError(f"the download of {path.name} has {saved.stat().st_size} bytes")
            await download.delete()
        else:
            written = await page.evaluate(
                """async (name) => {
                  const dir = await navigator.storage.getDirectory();
                  const size = (await (await dir.getFileHandle(name)).getFile()).size;
                  await dir.removeEntry(name);
                  return size;
                }""",
                path.name,
            )
            if written != size:
                raise RuntimeError(f"{path.name} on disk has {written} bytes")
        path.unlink()
        settled: dict[str, float] = {}
        if sample:
            await asyncio.sleep(SETTLE)  # what stays held once the file is saved
            settled = await web.memory()
        wall = sent["t1"] - sent["t0"]
        out: dict[str, Any] = {
            "mb_s": size / MB / wall,
            "cpu_sender_pct": 100 * (sent["cpu1"] - sent["cpu0"]) / wall,
            "cpu_receiver_pct": 100 * (cpu1 - cpu0) / wall,  # the page's renderer
            "cpu_browser_process_pct": 100 * (main1 - main0) / wall,  # its sockets, Blobs
        }
        if sample:
            keys = list(baseline)
            out["memory"] = {
                "file_mb": size / MB,
                "baseline": {k: round(baseline[k], 1) for k in keys},
                "peak": {k: round(max(s[k] for s in samples), 1) for k in keys},
                "after": {k: round(after[k], 1) for k in keys},
                "settled": {k: round(settled[k], 1) for k in keys},
                "samples": samples,
            }
        return out

    async def sample(
        self,
        web: WebPeer,
        samples: list[dict[str, float]],
        until: asyncio.Future[Any],
        t0: float,
    ) -> None:
        while True:
            samples.append({"t": round(time.monotonic() - t0, 2), **await web.memory()})
            if until.done():
                return
            await asyncio.wait([until], timeout=SAMPLE_EVERY)

    async def run(self) -> dict[str, Any]:
        url, token = await signal_server(self.reg)
        workers = await asyncio.gather(
            *(
                Worker.spawn(self.reg, name, "p2p", "--url", url, "--token", token)
                for name in ("kernel-a", "kernel-b", "kernel-c")
            )
        )
        await asyncio.gather(*(w.ready() for w in workers))
        a, b, c = workers
        await a.call("join", room="kernels")
        await b.call("join", room="kernels")
        await asyncio.gather(a.call("wait_peers", n=1), b.call("wait_peers", n=1))
        chromium = Chromium(self.tmp)
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.connect_over_cdp(await chromium.cdp_url())
                web = await WebPeer.open(chromium, browser, f"{url}?token={token}")
                self.results["chromium"] = browser.version
                await c.call("join", room="browser")
                await web.join("browser", "browser")
                await c.call("wait_peers", n=1)
                self.log("kernels and the page are connected")
                await self.measure(web, a, b, c)
                self.results["measure_user_agent_specific_memory"] = await web.user_agent_memory()
                await browser.close()
        finally:
            chromium.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.results

    async def measure(self, web: WebPeer, a: Worker, b: Worker, c: Worker) -> None:
        cfg = self.cfg
        size = cfg.file_mb * MB
        steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "kernel_to_kernel": lambda: self.kernel_to_kernel(a, b, size),
            "browser_to_kernel": lambda: self.browser_to_kernel(web, c, size),
            "kernel_to_browser_download": lambda: self.kernel_to_browser(web, c, size, "download"),
            "kernel_to_browser_disk": lambda: self.kernel_to_browser(web, c, size, "disk"),
        }
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in steps}
        for run in range(cfg.runs):  # interleaved: load from elsewhere hits every direction
            for key, step in steps.items():
                rows[key].append(await step())
                self.log(f"run {run + 1}: {key} {rows[key][-1]['mb_s']:.2f} MB/s")
        self.results["throughput"] = {
            "file_mb": cfg.file_mb,
            **{
                key: {name: stats([r[name] for r in got]) for name in got[0]}
                for key, got in rows.items()
            },
        }
        big = cfg.big_mb * MB
        self.results["receive_memory"] = {}
        for mode in ("download", "disk"):
            row = await self.kernel_to_browser(web, c, big, mode, sample=True)
            memory = row.pop("memory")
            self.results["receive_memory"][mode] = {
                **memory,
                "mb_s": round(row["mb_s"], 3),
                "cpu_renderer_pct": round(row["cpu_receiver_pct"], 1),
            }
            self.log(
                f"{cfg.big_mb} MB to the page ({mode}): {row['mb_s']:.2f} MB/s, peak "
                + ", ".join(f"{k} {v}" for k, v in memory["peak"].items())
            )


# ------------------------------------------------------------------ report
def table(r: dict[str, Any]) -> str:
    t = r["throughput"]
    out = [
        f"p2p-nb browser benchmark ({r['meta']['command']}), Chromium {r['chromium']}",
        f"\nfile of {t['file_mb']} MB, MB/s (10^6 B/s) median (min-max) of "
        f"{t['kernel_to_kernel']['mb_s']['n']}, CPU% sender / receiver",
    ]
    for key, label in DIRECTIONS.items():
        d = t[key]
        m = d["mb_s"]
        out.append(
            f"  {label:<30} {m['median']:7.2f} ({m['min']:.2f}-{m['max']:.2f})   "
            f"{d['cpu_sender_pct']['median']:3.0f} / {d['cpu_receiver_pct']['median']:3.0f} %"
            + (
                f" (browser process {d['cpu_browser_process_pct']['median']:.0f} %)"
                if "cpu_browser_process_pct" in d
                else ""
            )
        )
    for mode, d in r["receive_memory"].items():
        out.append(f"\nthe page receiving {d['file_mb']:.0f} MB ({mode}), {d['mb_s']:.2f} MB/s:")
        heads = ("before", "peak", "at end", f"+{SETTLE:.0f} s")
        out.append(f"  {'MB':<24} " + " ".join(f"{h:>9}" for h in heads))
        for k in d["baseline"]:
            row = (d[when][k] for when in ("baseline", "peak", "after", "settled"))
            out.append(f"  {k:<24} " + " ".join(f"{v:9.1f}" for v in row))
    out.append(f"\nmeasureUserAgentSpecificMemory: {r['measure_user_agent_specific_memory']}")
    return "\n".join(out)


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = r["receive_memory"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), sharey=True)
    for ax, (mode, d) in zip(axes, modes.items(), strict=True):
        ts = [s["t"] for s in d["samples"]]
        for key, label in (
            ("renderer_rss_mb", "page's renderer RSS"),
            ("js_heap_used_mb", "JS heap used"),
            ("browser_rss_mb", "browser process RSS"),
        ):
            ax.plot(ts, [s[key] for s in d["samples"]], label=label)
        ax.set_title(f"receiving {d['file_mb']:.0f} MB ({mode}), {d['mb_s']:.1f} MB/s")
        ax.set_xlabel("seconds since Accept")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MB")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench --browser", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small files, one run (< 1 min)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--file-mb", type=int, help="throughput file size (default 100)")
    parser.add_argument("--big-mb", type=int, help="the file the page's memory is watched on")
    parser.add_argument("--runs", type=int, help="throughput runs per direction (default 3)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} missing: apt-get install chromium (scripts/setup.sh)", file=sys.stderr)
        return 2
    cfg = Config.quick_config() if args.quick else Config()
    for name in ("file_mb", "big_mb", "runs"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    reg, log = run_logs(args.out, "browser-logs")
    from .__main__ import machine

    info = machine()
    started = time.monotonic()

    async def run() -> dict[str, Any]:
        try:
            async with asyncio.timeout(cfg.deadline):
                return await BrowserBench(cfg, reg, log).run()
        finally:
            await reg.stop_all()

    results = asyncio.run(run())
    results["meta"] = {
        "command": "python -m bench --browser " + " ".join(argv),
        "config": asdict(cfg),
        "machine": info,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - started, 1),
        "directions": DIRECTIONS,
    }
    (args.out / "browser.json").write_text(json.dumps(results, indent=1) + "\n")
    chart(results, args.out / "browser.png")
    print(table(results))
    print(f"wrote {args.out / 'browser.json'} and {args.out / 'browser.png'}")
    return 0
