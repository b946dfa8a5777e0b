"""Hardening (issue 17, item 10): what the servers send with their files, and
a warning for room passphrases short enough to guess offline."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from p2p_nb import new_room_secret
from p2p_nb.app import P2PApp
from p2p_nb.roomkey import RECOMMENDED_SECRET_CHARS, secret_warning

from .conftest import RunningServer
from .jupyter_server import JupyterServer

pytestmark = pytest.mark.anyio

FILES = ("p2p/web/js/client.js", "p2p/web/app.css", "p2p/web/index.html")
"""Static files, the raw page template among them (never meant to be opened)."""


async def headers_of(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


def assert_subresource(status: int, headers: dict[str, str]) -> None:
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy


async def test_the_standalone_servers_files_and_replies_say_nosniff_and_allow_nothing(
    signal_server: RunningServer,
) -> None:
    """Static files and JSON replies: ``nosniff`` and a policy that lets
    nothing run or frame them; the join page keeps its own policy (its
    scripts from the origin), which the web client tests run under."""
    for path in (*FILES, "p2p/health", "p2p/invite"):
        status, headers = await headers_of(signal_server.url + path)
        if path == "p2p/invite":
            assert status == 403  # no invite given: the reason, with the headers
            status = 200
        assert_subresource(status, headers)
    for path in ("", "p2p/join"):
        status, headers = await headers_of(signal_server.url + path)
        assert status == 200
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self' 'sha256-" in headers["Content-Security-Policy"]


async def test_the_jupyter_extensions_files_say_nosniff_and_allow_nothing(
    jupyter_server: JupyterServer,
) -> None:
    for path in (*FILES, "p2p/invite"):
        status, headers = await headers_of(jupyter_server.url + path)
        if path == "p2p/invite":
            assert status == 403
            status = 200
        assert_subresource(status, headers)


def test_a_short_passphrase_draws_a_warning_and_a_generated_secret_none() -> None:
    short = "hunter22"
    warning = secret_warning(short)
    assert warning is not None
    assert "8 characters" in warning
    assert "offline" in warning
    assert short not in warning
    assert secret_warning("x" * RECOMMENDED_SECRET_CHARS) is None
    assert secret_warning(new_room_secret()) is None


async def test_joining_with_a_short_passphrase_logs_the_warning(
    signal_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p2p_nb.app")
    app = await P2PApp.connect(signal_server.url, signal_server.token, thread=False)
    try:
        await app.join_room("weak", name="ana", secret="hunter22")
    finally:
        await app.disconnect()
    said = [r.getMessage() for r in caplog.records if "guesses" in r.getMessage()]
    assert said != []
    assert "hunter22" not in " ".join(said)
