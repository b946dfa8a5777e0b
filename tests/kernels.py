"""Drive real kernels that a real Jupyter server started, as a notebook would."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from jupyter_client.asynchronous.client import AsyncKernelClient

from .jupyter_server import JupyterServer


class CellError(AssertionError):
    pass


class Kernel:
    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.id = kernel_id
        self.client = AsyncKernelClient()
        self.client.load_connection_file(str(server.runtime_dir / f"kernel-{kernel_id}.json"))

    async def start(self) -> None:
        self.client.start_channels()
        for attempt in range(3):
            try:
                await self.client.wait_for_ready(timeout=60)
                return
            except RuntimeError:
                # "Kernel died before replying": a client without a manager judges
                # by heartbeats, which a loaded machine (2 cores) can miss once.
                if attempt == 2:
                    raise

    async def run(self, code: str, timeout: float = 60) -> str:
        """Execute a cell; return its stdout, raise :class:`CellError` on an exception."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        reply = await self.client.execute_interactive(
            textwrap.dedent(code), timeout=timeout, output_hook=hook, allow_stdin=False
        )
        if errors or reply["content"]["status"] != "ok":
            raise CellError("cell failed:\n" + "\n".join(errors) + "\n" + "".join(out))
        return "".join(out)

    def run_later(self, code: str) -> str:
        """Submit a cell and return at once (its msg id)."""
        msg_id: str = self.client.execute(textwrap.dedent(code), allow_stdin=False)
        return msg_id

    async def started(self, msg_id: str, timeout: float = 30) -> None:
        """Until the kernel starts executing cell ``msg_id`` (its ``execute_input``)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.client.get_iopub_msg()
                if (
                    msg["msg_type"] == "execute_input"
                    and msg["parent_header"].get("msg_id") == msg_id
                ):
                    return


@asynccontextmanager
async def server_kernels(server: JupyterServer, n: int) -> AsyncIterator[list[Kernel]]:
    """``n`` kernels started through the server's REST API, shut down afterwards."""
    headers = {"Authorization": f"token {server.token}"}
    kernels: list[Kernel] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        try:
            for _ in range(n):
                async with http.post(server.url + "api/kernels", data=json.dumps({})) as resp:
                    assert resp.status == 201, await resp.text()
                    kernel = Kernel(server, (await resp.json())["id"])
                kernels.append(kernel)
                await kernel.start()
            yield kernels
        finally:
            for kernel in kernels:
                kernel.client.stop_channels()
                async with http.delete(server.url + f"api/kernels/{kernel.id}"):
                    pass
