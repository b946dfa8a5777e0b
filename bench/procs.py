"""Child processes of the suite: the signaling server, the Socket.IO relay and
the peers (``bench.worker``). Every one is registered and stopped at the end,
even when a measurement fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_logs(out: Path, folder: str) -> tuple[Registry, Callable[[str], None]]:
    """A fresh log folder under ``out`` for one run's processes, and a progress
    logger to stderr that stamps each line with the seconds since the start."""
    out.mkdir(parents=True, exist_ok=True)
    logs = out / folder
    logs.mkdir(exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {line}", file=sys.stderr, flush=True)

    return Registry(logs), log


class Registry:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []
        self.workers: list[Worker] = []
        self._n = 0

    def log_file(self, name: str) -> Any:
        self._n += 1
        return (self.log_dir / f"{self._n:03d}-{name}.log").open("wb")

    async def spawn(self, *argv: str, name: str) -> asyncio.subprocess.Process:
        with self.log_file(name) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)
        await asyncio.gather(*(stop(p) for p in self.procs), return_exceptions=True)


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def signal_server(reg: Registry) -> tuple[str, str]:
    """``p2p-nb-signal`` in its own process, as users run it; (url, token)."""
    token = secrets.token_hex(12)
    port = free_port()
    await reg.spawn(
        "-m", "p2p_nb.server", "--host", "127.0.0.1", "--port", str(port), "--token", token,
        name="signal",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url + "p2p/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    for _ in range(300):
        if await asyncio.to_thread(healthy):
            return url, token
        await asyncio.sleep(0.1)
    raise RuntimeError("p2p-nb-signal did not come up within 30 s")


async def relay_server(reg: Registry) -> str:
    proc = await reg.spawn("-m", "bench.sio_relay", name="sio-relay")
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"PORT "):
        raise RuntimeError(f"bench.sio_relay did not start: {line!r}")
    return f"http://127.0.0.1:{int(line.split()[1])}/"


class Worker:
    """A ``bench.worker`` process and its JSON-lines command channel."""

    def __init__(self, reg: Registry, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.info: dict[str, Any] = {}
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())
        reg.workers.append(self)

    @classmethod
    async def spawn(cls, reg: Registry, name: str, kind: str, *args: str) -> Worker:
        proc = await reg.spawn("-m", "bench.worker", kind, *args, name=name)
        return cls(reg, proc, name)

    async def ready(self, timeout: float = 120) -> Worker:
        self.info = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("ev") == "ready" and not self._ready.done():
                self._ready.set_result(msg)
            elif "id" in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        gone = RuntimeError(f"worker {self.name} exited (code {self.proc.returncode})")
        for fut in [self._ready, *self._pending.values()]:
            if not fut.done():
                fut.set_exception(gone)
        self._pending.clear()

    async def call(self, cmd: str, timeout: float = 120, **kw: Any) -> dict[str, Any]:
        self._ids += 1
        mid = self._ids
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            (json.dumps({"id": mid, "cmd": cmd, "timeout": timeout * 0.9, **kw}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        try:
            msg = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(mid, None)
        if "error" in msg:
            raise RuntimeError(f"{self.name}: {cmd}: {msg['error']}")
        return msg

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("quit", timeout=5)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await stop(self.proc)
        self._reader.cancel()
