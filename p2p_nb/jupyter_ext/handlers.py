"""Tornado handlers that put the signaling service behind Jupyter's auth.

engine.io's own Tornado handler accepts anyone; these wrap it so a socket opens
only for a user Jupyter's identity provider knows and its authorizer allows.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engineio.async_drivers.tornado import get_tornado_handler
from engineio.async_socket import AsyncSocket
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web

from ..server.core import AuthRefused, SignalingService

AUTH_RESOURCE = "p2p"
"""The resource name a custom Jupyter ``Authorizer`` sees for every p2p route."""


async def jupyter_user(environ: dict[str, Any], auth: Any) -> str:
    """Refuse a Socket.IO connect unless Jupyter authenticated the handshake.

    The handler already returned 403 to strangers; this catches any route to
    the service that bypasses it (a misconfigured or future handler).
    """
    handler = environ.get("tornado.handler")
    user = getattr(handler, "current_user", None)
    if user is None:
        raise AuthRefused("not logged in to this Jupyter server")
    return str(getattr(user, "username", user))


def socket_handler_class(service: SignalingService) -> type[JupyterHandler]:
    """Build the Socket.IO handler class for ``service``.

    A factory because engine.io binds its Tornado handler class to one server
    instance when it creates it.
    """
    engineio_handler = get_tornado_handler(service.sio.eio)

    # Same base order as jupyter_server's KernelWebsocketHandler: the mixin's
    # prepare() authenticates without redirecting, JupyterHandler supplies
    # current_user and the authorizer.
    class SignalingSocketHandler(WebSocketMixin, engineio_handler, JupyterHandler):  # type: ignore[misc,valid-type]
        """The Socket.IO endpoint: Jupyter auth first, then engine.io."""

        auth_resource = AUTH_RESOURCE

        def set_default_headers(self) -> None:
            """Skip JupyterHandler's page headers, meaningless on a WebSocket."""

        def check_origin(self, origin: str | None = None) -> bool:
            """Let Jupyter decide the origin in both places it is asked.

            Tornado's handshake passes the Origin header; Jupyter's XSRF check
            calls with no argument, which engine.io's version cannot take.
            """
            if origin is None:
                return JupyterHandler.check_origin(self)
            return bool(WebSocketMixin.check_origin(self, origin))

        @ws_authenticated
        async def get(self, *args: Any, **kwargs: Any) -> None:
            """Authorize before engine.io sees the request."""
            allowed = await ensure_async(
                self.authorizer.is_authorized(self, self.current_user, "execute", AUTH_RESOURCE)
            )
            if not allowed:
                raise web.HTTPError(403, f"not authorized to execute on {AUTH_RESOURCE!r}")
            pending = super().get(*args, **kwargs)
            if pending is not None:
                await pending

    return SignalingSocketHandler


class HealthHandler(APIHandler):
    """``GET {base_url}p2p/health``: the service's counters, for humans and probes."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, service: SignalingService) -> None:
        self.service = service

    @web.authenticated
    async def get(self) -> None:
        """Counts only, never room names or users, so "read" is enough."""
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403, f"not authorized to read {AUTH_RESOURCE!r}")
        await self.finish(json.dumps(self.service.health()))


async def cancel_pings(eio: Any) -> None:
    """Cancel the ping tasks engine.io leaves sleeping after a socket closes.

    Each lingers up to ``ping_interval``; when the server exits first, asyncio
    prints "Task was destroyed but it is pending!" for every one of them.
    """
    ping = AsyncSocket._send_ping.__code__

    def is_ours(task: asyncio.Task[Any]) -> bool:
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        return getattr(coro, "cr_code", None) is ping and getattr(owner, "server", None) is eio

    pings = [task for task in asyncio.all_tasks() if is_ours(task)]
    for task in pings:
        task.cancel()
    await asyncio.gather(*pings, return_exceptions=True)
