"""The Jupyter server extension, against a real ``jupyter server`` subprocess.

Plain ``socketio.AsyncClient`` and aiohttp, as any client would connect: the
point is what Jupyter's auth lets through, not what our own client does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import anyio
import pytest
import socketio
from jupyter_server.auth import User
from jupyter_server.serverapp import ServerApp
from traitlets.config import Config

from p2p_nb import __version__
from p2p_nb.app import PUBLIC_URL_ENV
from p2p_nb.discovery import discover_server
from p2p_nb.jupyter_ext.app import P2PExtensionApp, reachable_url
from p2p_nb.jupyter_ext.handlers import jupyter_user
from p2p_nb.server.auth import AuthRefused, Identity
from p2p_nb.server.limits import ServerLimits

from .jupyter_server import JupyterServer, isolated_env, run_jupyter_server

pytestmark = pytest.mark.anyio


def origin(server: JupyterServer) -> str:
    parts = urlsplit(server.url)
    return f"{parts.scheme}://{parts.netloc}"


def socketio_path(server: JupyterServer) -> str:
    return urlsplit(server.url).path.strip("/") + "/p2p/socket.io"


@asynccontextmanager
async def sio_client(
    server: JupyterServer, *, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[socketio.AsyncClient]:
    """A connected client whose HTTP session we own, so nothing leaks on refusal."""
    async with aiohttp.ClientSession() as session:
        client = socketio.AsyncClient(http_session=session, reconnection=False)
        try:
            await client.connect(
                origin(server) + query,
                headers=headers or {},
                transports=["websocket"],
                socketio_path=socketio_path(server),
                wait_timeout=10,
            )
            yield client
        finally:
            await client.disconnect()


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


async def test_health_reports_counters(jupyter_server: JupyterServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{jupyter_server.url}p2p/health", headers=auth_header(jupyter_server.token)
        ) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert isinstance(body["rooms"], int)
    assert isinstance(body["peers"], int)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "token wrong"}])
async def test_health_refuses_strangers(
    jupyter_server: JupyterServer, headers: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{jupyter_server.url}p2p/health", headers=headers, allow_redirects=False
        ) as response,
    ):
        assert response.status == 403


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "token wrong"}], ids=["no-token", "wrong-token"]
)
async def test_socket_refuses_strangers(
    jupyter_server: JupyterServer, headers: dict[str, str]
) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with sio_client(jupyter_server, headers=headers):
            pass


async def test_socket_with_token_header_joins(jupyter_server: JupyterServer) -> None:
    async with sio_client(jupyter_server, headers=auth_header(jupyter_server.token)) as client:
        reply = await client.call("join", {"room": "r1", "name": "a"}, timeout=10)
        assert reply["ok"] is True
        assert isinstance(reply["peer_id"], str)
        assert reply["peer_id"]
        assert reply["peers"] == []


async def test_socket_with_token_in_url_joins(jupyter_server: JupyterServer) -> None:
    async with sio_client(jupyter_server, query=f"?token={jupyter_server.token}") as client:
        reply = await client.call("join", {"room": "r-url", "name": "b"}, timeout=10)
        assert reply["ok"] is True
        assert reply["peer_id"]


async def test_second_peer_sees_first(jupyter_server: JupyterServer) -> None:
    headers = auth_header(jupyter_server.token)
    async with (
        sio_client(jupyter_server, headers=headers) as first,
        sio_client(jupyter_server, headers=headers) as second,
    ):
        one = await first.call("join", {"room": "r2", "name": "one"}, timeout=10)
        two = await second.call("join", {"room": "r2", "name": "two"}, timeout=10)
        assert [p["peer_id"] for p in two["peers"]] == [one["peer_id"]]


async def login_cookie(server: JupyterServer) -> str:
    """The ``Cookie`` header a browser holds after logging in with the token."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}api/status?token={server.token}") as response,
    ):
        assert response.status == 200
        return "; ".join(f"{m.key}={m.value}" for m in response.cookies.values())


async def test_cookie_socket_checks_origin(jupyter_server: JupyterServer) -> None:
    """A browser session is accepted from the server's own page, never another site's."""
    cookie = await login_cookie(jupyter_server)
    same = {"Cookie": cookie, "Origin": origin(jupyter_server)}
    async with sio_client(jupyter_server, headers=same) as client:
        reply = await client.call("join", {"room": "r-cookie", "name": "c"}, timeout=10)
        assert reply["ok"] is True
    foreign = {"Cookie": cookie, "Origin": "http://evil.example"}
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with sio_client(jupyter_server, headers=foreign):
            pass


async def test_cookie_post_is_refused_not_crashed(jupyter_server: JupyterServer) -> None:
    """Jupyter's XSRF check calls check_origin() with no argument; it must answer, not raise."""
    cookie = await login_cookie(jupyter_server)
    url = f"{jupyter_server.url}p2p/socket.io/?EIO=4&transport=polling"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers={"Cookie": cookie}, data=b"40") as response,
    ):
        assert response.status == 403


METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@pytest.mark.parametrize("route", ["p2p/socket.io/?EIO=4&transport=polling", "p2p/health"])
async def test_every_method_needs_a_jupyter_user(jupyter_server: JupyterServer, route: str) -> None:
    """Authentication happens in prepare(), for whatever method arrives, not only GET."""
    async with aiohttp.ClientSession() as session:
        for method in METHODS:
            async with session.request(
                method, f"{jupyter_server.url}{route}", data=b"40", allow_redirects=False
            ) as response:
                assert response.status == 403, (method, response.status)


async def test_polling_transport_is_not_served(jupyter_server: JupyterServer) -> None:
    url = f"{jupyter_server.url}p2p/socket.io/?EIO=4&transport=polling"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=auth_header(jupyter_server.token)) as response,
    ):
        assert response.status == 400


async def test_server_shutdown_disconnects_peers_cleanly(tmp_path: Path) -> None:
    """SIGTERM runs stop_extension: peers hear a server disconnect, no task is left behind."""
    reasons: list[str] = []
    gone = anyio.Event()
    with run_jupyter_server(tmp_path) as server:
        async with sio_client(server, headers=auth_header(server.token)) as client:

            @client.event  # type: ignore[untyped-decorator]
            async def disconnect(reason: str) -> None:
                reasons.append(reason)
                gone.set()

            await client.call("join", {"room": "r-stop", "name": "s"}, timeout=10)
            server.process.terminate()
            with anyio.fail_after(20):
                await gone.wait()
            exit_code = await anyio.to_thread.run_sync(server.process.wait)
    assert reasons == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
    assert exit_code == 0
    assert "Task was destroyed" not in server.log()


AUTHORIZER = """
from jupyter_server.auth import Authorizer

class NoP2P(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        if resource != "p2p":
            return True
        self.log.warning("authz asked: %s %s", action, resource)
        return False
"""


async def test_authorizer_decides_both_routes(tmp_path: Path) -> None:
    """A valid token is not enough: the routes ask the authorizer for read/execute on p2p."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "no_p2p_authz.py").write_text(AUTHORIZER)
    with run_jupyter_server(tmp_path, "--ServerApp.authorizer_class=no_p2p_authz.NoP2P") as server:
        headers = auth_header(server.token)
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{server.url}api/status") as response:
                assert response.status == 200
            async with session.get(f"{server.url}p2p/health") as response:
                assert response.status == 403
            # a known user is still asked, whatever the method
            for method in METHODS:
                for route in ("p2p/socket.io/?EIO=4&transport=polling", "p2p/health"):
                    async with session.request(
                        method, f"{server.url}{route}", data=b"40"
                    ) as response:
                        assert response.status == 403, (method, route, response.status)
        with pytest.raises(socketio.exceptions.ConnectionError):
            async with sio_client(server, headers=headers):
                pass
        log = server.log()
    assert "authz asked: read p2p" in log
    assert "authz asked: execute p2p" in log


async def test_socket_hook_requires_jupyter_user() -> None:
    """The Socket.IO-level check refuses whatever reaches it without a Jupyter user."""
    with pytest.raises(AuthRefused):
        await jupyter_user({}, None)
    with pytest.raises(AuthRefused):
        await jupyter_user({"tornado.handler": SimpleNamespace(current_user=None)}, None)
    handler = SimpleNamespace(current_user=User(username="ana"))
    assert await jupyter_user({"tornado.handler": handler}, None) == Identity("jupyter", "ana")


def test_extension_list_shows_enabled_ok(tmp_path: Path) -> None:
    """Enabled by the environment's auto-enable file alone: the user config is empty."""
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # colours
    lines = [line.strip() for line in plain.splitlines()]
    assert "p2p_nb enabled" in lines
    assert f"p2p_nb {__version__} OK" in lines


async def run_in_kernel(server: JupyterServer, code: str) -> str:
    """Run ``code`` in a fresh kernel of ``server``; return what it printed."""
    api = f"{server.url}api/kernels"
    headers = auth_header(server.token)
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(api, json={"name": "python3"}) as response:
            assert response.status == 201, await response.text()
            kernel_id = (await response.json())["id"]
        try:
            ws_url = f"{api}/{kernel_id}/channels".replace("http", "ws", 1)
            async with session.ws_connect(ws_url) as ws:
                return await _execute(ws, code)
        finally:
            async with session.delete(f"{api}/{kernel_id}") as response:
                assert response.status == 204


async def _execute(ws: aiohttp.ClientWebSocketResponse, code: str) -> str:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "session": uuid.uuid4().hex,
        "username": "test",
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
    await ws.send_json(
        {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
            "buffers": [],
        }
    )
    out: list[str] = []
    with anyio.fail_after(60):
        async for frame in ws:
            msg: dict[str, Any] = json.loads(frame.data)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                pytest.fail("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    pytest.fail("kernel websocket closed before the cell finished")


DISCOVER = """
import json, os
from p2p_nb.discovery import discover_server
from_env = discover_server()
del os.environ["P2P_NB_URL"], os.environ["P2P_NB_TOKEN"]
print(json.dumps({"env": from_env, "info_file": discover_server()}))
"""


async def test_kernel_discovers_its_server(jupyter_server: JupyterServer) -> None:
    """A kernel started by the server finds it, by environment and by info file."""
    printed = await run_in_kernel(jupyter_server, DISCOVER)
    found = json.loads(printed)
    expected = [jupyter_server.url, jupyter_server.token]
    assert found == {"env": expected, "info_file": expected}


def test_discover_prefers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_NB_URL", "http://shared.example:9000/")
    monkeypatch.delenv("P2P_NB_TOKEN", raising=False)
    assert discover_server() == ("http://shared.example:9000/", "")


def test_discover_uses_hub_token_when_info_file_has_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    info = {"url": "http://host:1/", "hostname": "0.0.0.0", "port": 8888}
    info |= {"base_url": "/user/ana/", "token": "", "secure": False, "sock": ""}
    (tmp_path / "jpserver-4242.json").write_text(json.dumps(info))
    for name in ("P2P_NB_URL", "P2P_NB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("JPY_PARENT_PID", "4242")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    assert discover_server() == ("http://127.0.0.1:8888/user/ana/", "hub-token")
    monkeypatch.setenv("JPY_PARENT_PID", "4243")
    assert discover_server() is None


def fake_serverapp(**traits: Any) -> ServerApp:
    defaults: dict[str, Any] = {"sock": "", "ip": "", "port": 8888, "certfile": ""}
    defaults |= {
        "base_url": "/",
        "identity_provider": SimpleNamespace(token="t"),
        "root_dir": "/srv",
    }
    return cast(ServerApp, SimpleNamespace(**(defaults | traits)))


def test_reachable_url_avoids_wildcards() -> None:
    assert reachable_url(fake_serverapp(ip="0.0.0.0")) == "http://127.0.0.1:8888/"
    assert reachable_url(fake_serverapp(ip="::1", base_url="/b/")) == "http://[::1]:8888/b/"
    assert reachable_url(fake_serverapp(sock="/tmp/j.sock")) is None


class ConfiguredManager(socketio.AsyncManager):  # type: ignore[misc]
    """Stands in for socketio.AsyncRedisManager, which needs a Redis to construct."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = kwargs


async def test_traits_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a deployment sizes rooms, swaps in a Redis manager and names the
    address behind its proxy: plain Jupyter config."""
    public = "https://jupyter.example.org/user/ana/"
    traits = {
        "max_peers_per_room": 3,
        "client_manager_class": f"{__name__}.ConfiguredManager",
        "client_manager_kwargs": {"url": "redis://127.0.0.1:6379/0"},
        "public_url": public,
    }
    app = P2PExtensionApp(config=Config({"P2PExtensionApp": traits}))
    app.initialize_settings()
    assert app.service is not None
    assert app.service.limits.max_peers_per_room == 3
    manager = app.service.sio.manager
    assert isinstance(manager, ConfiguredManager)
    assert manager.kwargs == {"url": "redis://127.0.0.1:6379/0"}
    assert app.service.public_url == public  # what the server's invite reply names
    # kernels inherit it: the client's invites name it even without that reply
    for name in ("P2P_NB_URL", "P2P_NB_TOKEN", PUBLIC_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    await app._start_jupyter_server_extension(fake_serverapp())
    assert os.environ.get(PUBLIC_URL_ENV) == public
    assert discover_server() == ("http://127.0.0.1:8888/", "t")
    await app.stop_extension()
    assert PUBLIC_URL_ENV not in os.environ


def test_resume_key_file_trait(tmp_path: Path) -> None:
    """Random per start by default; a key file (0600) where ids must survive a restart."""
    first, second = P2PExtensionApp(), P2PExtensionApp()
    first.initialize_settings()
    second.initialize_settings()
    assert first.service is not None
    assert second.service is not None
    assert first.service.resume_key != second.service.resume_key
    path = tmp_path / "p2p-resume.key"
    keyed = [
        P2PExtensionApp(config=Config({"P2PExtensionApp": {"resume_key_file": str(path)}}))
        for _ in range(2)
    ]
    for app in keyed:
        app.initialize_settings()
    assert keyed[0].service is not None
    assert keyed[1].service is not None
    assert keyed[0].service.resume_key == keyed[1].service.resume_key
    assert path.stat().st_mode & 0o777 == 0o600


def test_default_manager_is_in_process() -> None:
    app = P2PExtensionApp()
    app.initialize_settings()
    assert app.service is not None
    assert type(app.service.sio.manager) is socketio.AsyncManager
    assert app.service.limits.max_peers_per_room == ServerLimits().max_peers_per_room


async def test_user_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user who points kernels elsewhere must not get our Jupyter token paired with it."""
    monkeypatch.setenv("P2P_NB_URL", "http://shared.example:9000/")
    monkeypatch.delenv("P2P_NB_TOKEN", raising=False)
    app = P2PExtensionApp()
    await app._start_jupyter_server_extension(fake_serverapp())
    assert discover_server() == ("http://shared.example:9000/", "")
    await app.stop_extension()
    assert discover_server() == ("http://shared.example:9000/", "")


async def test_hub_server_exports_its_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """On JupyterHub the server has no token; kernels get the hub API token it accepts."""
    for name in ("P2P_NB_URL", "P2P_NB_TOKEN", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    app = P2PExtensionApp()
    hub = fake_serverapp(identity_provider=SimpleNamespace(token=""), base_url="/user/ana/")
    await app._start_jupyter_server_extension(hub)
    assert discover_server() == ("http://127.0.0.1:8888/user/ana/", "hub-token")
    await app.stop_extension()
    assert discover_server() is None
