"""A real ``jupyter server`` subprocess with the p2p_nb extension, for tests.

A subprocess, not pytest-jupyter's in-process app: it proves what users get
(the extension enabled by the auto-enable file the package installs into
``{sys.prefix}/etc/jupyter``, no command-line flag) and gives kernels a real
parent server to discover.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BASE_URL = "/jp/"
STARTUP_TIMEOUT = 60.0
"""Seconds a cold start may take (imports dominate); the poll ends sooner."""


@dataclass(frozen=True)
class JupyterServer:
    """Where the running server is and how to get in."""

    url: str
    """Base URL ending in ``/``, e.g. ``http://127.0.0.1:41234/jp/``."""
    token: str
    root_dir: Path
    runtime_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """The server's combined output so far, for assertions and failure messages."""
        return self.log_path.read_text(errors="replace")


def isolated_env(tmp: Path) -> dict[str, str]:
    """Our own user-level Jupyter dirs; the environment's etc/jupyter stays visible."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "JPY_", "P2P_NB_")) and k != "IPYTHONDIR"
    }
    for name in ("config", "data", "runtime", "ipython"):
        (tmp / name).mkdir()
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        IPYTHONDIR=str(tmp / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _server_info(runtime_dir: Path, pid: int) -> dict[str, object] | None:
    """The info file the server writes once it listens; it carries the real port."""
    try:
        data = json.loads((runtime_dir / f"jpserver-{pid}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_up(url: str, token: str) -> bool:
    request = urllib.request.Request(
        f"{url}api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(process: subprocess.Popen[bytes], runtime_dir: Path, token: str, log: Path) -> str:
    """Poll until ``/api/status`` answers: the one bounded wait in this module."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jupyter server exited with {process.returncode}:\n{log.read_text()}")
        info = _server_info(runtime_dir, process.pid)
        if info is not None:
            url = f"http://127.0.0.1:{info['port']}{info['base_url']}"
            if _is_up(url, token):
                return url
        time.sleep(0.1)
    pytest.fail(f"jupyter server not ready after {STARTUP_TIMEOUT}s:\n{log.read_text()}")


def stop_popen(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM first (so Jupyter's stop_extension runs as it would for a user),
    SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


@contextmanager
def run_jupyter_server(
    tmp: Path, *extra_args: str, app: str = "jupyter_server", base_url: str = BASE_URL
) -> Iterator[JupyterServer]:
    """Start a server in ``tmp`` and stop it on exit; for tests that need their own.

    ``root_dir`` is the working directory, so a module a test writes there can
    be named in ``extra_args`` (e.g. a custom ``--ServerApp.authorizer_class``).
    ``app`` is the module run with ``python -m``: ``"jupyterlab"`` serves the
    JupyterLab frontend too (see ``tests/browser.py``).
    """
    root_dir = tmp / "root"
    root_dir.mkdir(exist_ok=True)
    env = isolated_env(tmp)
    token = secrets.token_hex(16)
    log_path = tmp / "server.log"
    argv = [
        sys.executable,
        "-m",
        app,
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI runs as root in its own namespace
        *extra_args,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, env=env, cwd=root_dir, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        url = _wait_ready(process, tmp / "runtime", token, log_path)
        yield JupyterServer(url, token, root_dir, tmp / "runtime", process, log_path)
    finally:
        stop_popen(process)


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One jupyter server for the session, on 127.0.0.1 with an OS-chosen port."""
    with run_jupyter_server(tmp_path_factory.mktemp("jupyter")) as server:
        yield server
