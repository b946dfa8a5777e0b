"""The README's quick starts, run as written, in fresh venvs.

Each quick start is a fenced block in README.md right after an HTML comment
``<!-- quickstart: NAME -->``. A test here takes that block and runs it with
bash the way a user pastes it: in a fresh copy of the checkout (what a clone
holds: tracked and new files, nothing ignored, so no ``.venv``), with a new
``HOME`` (so ``~/p2p-nb-env`` is a new venv made by ``python3 -m venv``), every
line in order; the last line starts a server and keeps running. Then the test
does what the README says to do next, with real parts: the page the standalone
server prints is opened in Chromium and joined, a Python peer connects with
the line it prints; the notebook quick start's cell runs in a kernel the
Jupyter server started, and a Python peer meets its panel. Change a command in
the README so that it no longer works, and these tests fail.

What the environment supplies, and the README rightly does not say:

- Packages come from ``.venv/wheelhouse`` (``PIP_NO_INDEX``,
  ``PIP_FIND_LINKS``), which ``scripts/setup.sh`` downloads from PyPI
  beforehand: the suite runs in a network namespace that reaches nothing.
  The ``pip install`` commands themselves are the README's.
- Jupyter's settings for a test run (no browser to open, a free port, a known
  token, running as root allowed) come from ``jupyter_server_config.json`` in
  ``JUPYTER_CONFIG_DIR``, as a user's own configuration would.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import aiohttp
import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from playwright.async_api import Browser, expect

from p2p_nb.app import P2PApp

from .browser import TIMEOUT, new_user
from .jupyter_server import isolated_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
INSTALL_TIMEOUT = 420.0
"""Seconds a block may take to reach its server's first words: a fresh venv
and a full install (measured 30-80 s on 2 loaded cores; the bound is generous)."""
MARKER = re.compile(r"<!-- quickstart: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.DOTALL)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(INSTALL_TIMEOUT + 180)]


def quickstart(name: str) -> str:
    """The README's block marked ``<!-- quickstart: name -->``."""
    blocks = {m.group(1): m.group(3) for m in MARKER.finditer(README.read_text())}
    assert name in blocks, f"README.md has no block marked <!-- quickstart: {name} -->"
    return blocks[name]


def test_the_readme_opens_with_the_two_project_commands() -> None:
    """`.ci/run` and every developer start from these two lines: they stay first."""
    first = re.search(r"```bash\n(.*?)\n```", README.read_text(), re.DOTALL)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def fresh_clone(tmp: Path) -> Path:
    """The checkout as a clone would have it, with the working tree's changes."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    clone = tmp / "p2p-nb"
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if source.is_file():  # a file deleted but not yet staged is listed too
            target = clone / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return clone


def user_env(tmp: Path) -> dict[str, str]:
    """A new user's environment: their own HOME and Jupyter dirs, none of ours."""
    if not (WHEELHOUSE / ".stamp").is_file():
        pytest.fail(f"{WHEELHOUSE} is missing: run `bash scripts/setup.sh` (it downloads it)")
    jupyter = tmp / "jupyter"
    jupyter.mkdir()
    env = isolated_env(jupyter)
    home = tmp / "home"
    home.mkdir()
    ours = str(Path(sys.prefix) / "bin")
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(WHEELHOUSE),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


class Pasted:
    """A README block running in bash; its output, line by line, as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._more.set()
        self._more.set()

    def output(self, tail: int = 60) -> str:
        """The last ``tail`` lines (pip's list of what it installs is long)."""
        return "\n".join(self.lines[-tail:])

    async def line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fail if the block ends first."""
        regex = re.compile(pattern)
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for text in self.lines[seen:]:
                        if found := regex.search(text):
                            return found
                    seen = len(self.lines)
                    if self._reader.done():
                        pytest.fail(
                            f"the README block ended ({await self.process.wait()}) before "
                            f"printing {pattern!r}:\n{self.output()}"
                        )
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            pytest.fail(f"no line matching {pattern!r} after {timeout} s:\n{self.output()}")

    async def stop(self) -> None:
        """SIGTERM to the block's process group (bash and the server it started)."""
        if self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        await self._reader


@asynccontextmanager
async def pasted(block: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[Pasted]:
    """Run ``block`` with ``bash -e`` (stop at the first failing line) in ``cwd``."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-c",
        block,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() ends the server too
    )
    shell = Pasted(process)
    try:
        yield shell
    except BaseException:
        print(shell.output())  # shown by pytest with the failure
        raise
    finally:
        await shell.stop()


def require_free_port(block: str) -> None:
    """The standalone block names its port; say so clearly if it is taken here."""
    found = re.search(r"--port (\d+)", block)
    assert found, "the standalone quick start names no --port"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", int(found.group(1))))
        except OSError:
            pytest.fail(
                f"port {found.group(1)} is taken on this host; run the tests in their own "
                "network namespace, as scripts/test.sh does"
            )


async def get(url: str) -> tuple[int, str, str]:
    def fetch() -> tuple[int, str, str]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()

    return await asyncio.to_thread(fetch)


def connect_arguments(call: str) -> dict[str, Any]:
    """The keyword arguments of the printed ``P2PApp.connect(url=..., token=...)``."""
    parsed = ast.parse(f"f({call})", mode="eval").body
    assert isinstance(parsed, ast.Call)
    return {kw.arg: ast.literal_eval(kw.value) for kw in parsed.keywords if kw.arg}


async def test_the_standalone_quick_start_serves_the_page_and_peers_meet(
    tmp_path: Path, browser: Browser
) -> None:
    """`p2p-nb-signal` from a fresh venv prints an address; a browser joins there
    and a Python peer connected with the printed line chats with it."""
    block = quickstart("standalone")
    assert "p2p-nb-signal" in block.splitlines()[-1]
    require_free_port(block)
    clone = fresh_clone(tmp_path)
    env = user_env(tmp_path)
    async with pasted(block, clone, env) as shell:
        page_url = (await shell.line(r"in a browser: (\S+)", INSTALL_TIMEOUT)).group(1)
        call = (await shell.line(r"connect with: P2PApp\.connect\((.*)\)$", 10)).group(1)
        signal_bin = Path(env["HOME"]) / "p2p-nb-env" / "bin" / "p2p-nb-signal"
        assert signal_bin.is_file(), "the server did not come from the quick start's venv"

        status, content_type, html = await get(page_url)
        assert (status, content_type.split(";")[0]) == (200, "text/html")
        assert "Your name" in html

        ben = await P2PApp.connect(**connect_arguments(call), thread=False)
        try:
            await ben.join_room("demo", name="ben")
            connected = ben.events("peer_connected")
            messages = ben.events("message")
            context = await new_user(browser)
            # Loopback ICE candidates inside the test namespace (tests/test_web_client.py)
            await context.grant_permissions(["camera", "microphone"])
            page = await context.new_page()
            await page.goto(page_url)
            await page.get_by_label("Your name").fill("ana")
            await page.get_by_label("Room", exact=True).fill("demo")
            await page.get_by_role("button", name="Join").click()
            event = await connected.get(timeout=TIMEOUT)
            assert event.data["name"] == "ana"
            box = page.get_by_label("Message")
            await box.fill("hello from the quick start")
            await box.press("Enter")
            message = (await messages.get(timeout=TIMEOUT)).data
            assert (message.sender_name, message.text) == ("ana", "hello from the quick start")
            await expect(page.locator("#peers .peer-name", has_text="ben")).to_be_visible()
            await context.close()
        finally:
            await ben.disconnect()


JUPYTER_TEST_CONFIG = {
    "ServerApp": {
        "ip": "127.0.0.1",
        "port_retries": 0,
        "open_browser": False,
        "allow_root": True,  # CI and this suite run as root
    }
}


async def test_the_notebook_quick_start_runs_the_panel_in_jupyterlab(tmp_path: Path) -> None:
    """JupyterLab from a fresh venv has the extension on; the README's cell, in
    a notebook's kernel, shows the panel and joins; a Python peer meets it."""
    block = quickstart("notebook")
    cell = quickstart("notebook-cell")
    assert "jupyter lab" in block.splitlines()[-1]
    clone = fresh_clone(tmp_path)
    env = user_env(tmp_path)
    token = secrets.token_hex(16)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    config = dict(JUPYTER_TEST_CONFIG)
    # A free port chosen here: with port 0, Jupyter prints a port it does not listen on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config["ServerApp"] = {**config["ServerApp"], "port": port, "root_dir": str(notebooks)}
    config["IdentityProvider"] = {"token": token}
    config_file = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
    config_file.write_text(json.dumps(config))
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])

    async with pasted(block, clone, env) as shell:
        # "Open the URL it prints": Jupyter prints it with the token masked
        printed = r"(http://127\.0\.0\.1:\d+/)lab\?token="
        url = (await shell.line(printed, INSTALL_TIMEOUT)).group(1)
        headers = {"Authorization": f"token {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            await wait_listening(http, url + "api/status")
            # A notebook's session, as JupyterLab opens one for a new notebook
            new = {"path": "Untitled.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
            async with http.post(url + "api/sessions", json=new) as response:
                assert response.status == 201, await response.text()
                session = await response.json()
            kernel = AsyncKernelClient()
            kernel.load_connection_file(str(runtime / f"kernel-{session['kernel']['id']}.json"))
            kernel.start_channels()
            ben = await P2PApp.connect(url, token, thread=False)
            try:
                await wait_kernel_ready(kernel, timeout=120)
                where = await run(kernel, "import sys, p2p_nb; print(sys.prefix, p2p_nb.__file__)")
                prefix, module = where["stdout"].split()
                venv = Path(env["HOME"]) / "p2p-nb-env"
                assert Path(prefix) == venv, "the kernel is not the quick start's venv"
                assert Path(module).is_relative_to(venv), "p2p_nb did not come from the venv"

                await ben.join_room("demo", name="ben")
                connected = ben.events("peer_connected")
                messages = ben.events("message")
                shown = await run(kernel, cell)
                assert "application/vnd.jupyter.widget-view+json" in shown["data"], shown
                event = await connected.get(timeout=TIMEOUT)
                assert event.data["name"] == "ana"
                await run(kernel, 'panel.send("hello from the panel")')
                message = (await messages.get(timeout=TIMEOUT)).data
                assert (message.sender_name, message.text) == ("ana", "hello from the panel")
                await run(kernel, "panel.close()")
            finally:
                kernel.stop_channels()
                await ben.disconnect()
                async with http.delete(url + f"api/sessions/{session['id']}"):
                    pass


async def wait_listening(http: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
    """Jupyter prints its URL a moment before it accepts connections: poll, bounded."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with http.get(url) as response:
                    assert response.status == 200, await response.text()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)


async def wait_kernel_ready(kernel: AsyncKernelClient, timeout: float) -> None:
    """Until the kernel answers ``kernel_info`` and its IOPub stream is connected.

    Not ``wait_for_ready``: for a client no manager owns, that calls the kernel
    dead as soon as one heartbeat takes over a second, which a freshly installed
    kernel starting on a loaded two-core machine can do (seen in CI).
    """
    async with asyncio.timeout(timeout):
        while True:
            kernel.kernel_info()
            try:
                reply = await kernel.get_shell_msg(timeout=1)
            except Empty:
                continue
            if reply["msg_type"] != "kernel_info_reply":
                continue
            try:  # the busy/idle of that request: IOPub is subscribed, nothing will be missed
                await kernel.get_iopub_msg(timeout=1)
            except Empty:
                continue
            return


async def run(kernel: AsyncKernelClient, code: str) -> dict[str, Any]:
    """Execute a cell; its stdout and the mime types it displayed. Fail on an error."""
    out: list[str] = []
    data: set[str] = set()
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind in ("display_data", "execute_result"):
            data.update(content["data"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    reply = await kernel.execute_interactive(code, timeout=120, output_hook=hook, allow_stdin=False)
    assert not errors, "\n".join(errors)
    assert reply["content"]["status"] == "ok", reply["content"]
    return {"stdout": "".join(out), "data": data}
