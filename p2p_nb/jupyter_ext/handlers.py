"""Tornado handlers that put the signaling service behind Jupyter's auth.

engine.io's own Tornado handler accepts anyone; these wrap it so a socket opens
only for a user Jupyter's identity provider knows and its authorizer allows,
or for a holder of one of this service's invite tokens (``inv1.``..., in the
``Authorization: token`` header): that opens the p2p socket, confined to the
invite's room, and nothing else, since Jupyter itself does not know the token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from engineio.async_drivers.tornado import get_tornado_handler
from engineio.async_socket import AsyncSocket
from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web

from ..server.auth import Authority, AuthRefused, Credentials, Identity, token_fingerprint
from ..server.core import SignalingService
from ..server.headers import subresource_headers
from ..server.invites import check_invite, is_invite
from ..web import render_page

AUTH_RESOURCE = "p2p"
"""The resource name a custom Jupyter ``Authorizer`` sees for every p2p route."""

_AUTHORITY = Authority(trust_host_user=True)


async def jupyter_user(environ: dict[str, Any], auth: Any) -> Identity:
    """The Socket.IO connect's identity: the Jupyter user who opened the socket,
    or the invite it opened with, checked again now.

    Every namespace CONNECT comes here, and one engine.io socket may carry
    several over its life: an invite revoked or expired since the upgrade is
    refused on the next one (the handler only remembers the token). The
    handler already refused strangers in ``prepare``; this catches any route
    to the service that bypasses it (a misconfigured or future handler).
    """
    handler = environ.get("tornado.handler")
    recheck = getattr(handler, "invite_identity_now", None)
    if callable(recheck):
        invited = recheck()
        if isinstance(invited, Identity):
            return invited
    user = getattr(handler, "current_user", None)
    name = None if user is None else str(getattr(user, "username", user))
    if name is not None and _holds_server_token(handler):
        # Jupyter makes every token-authenticated request without a login
        # cookie a new random "Anonymous" user; to p2p-nb all holders of the
        # server's token are one party (as on the standalone server), or a
        # restarted kernel could never take its name or its peer id back.
        name = f"token-{token_fingerprint(str(getattr(handler, 'token', '')))}"
    return _AUTHORITY.identify(Credentials(host_user=name))


def _holds_server_token(handler: Any) -> bool:
    """The connection presented this server's own token (not a user's login)."""
    token = getattr(handler, "token", None)
    provider = getattr(handler, "identity_provider", None)
    if not token or provider is None:
        return False
    given = provider.get_token(handler)
    return isinstance(given, str) and hmac.compare_digest(given.encode(), str(token).encode())


async def authorize(handler: JupyterHandler, action: str) -> None:
    """Jupyter's identity provider and authorizer, for every HTTP method.

    Run from ``prepare``: a check in ``get`` alone leaves POST, OPTIONS and
    whatever the wrapped handler adds later reachable by anyone.
    """
    if handler.current_user is None:
        raise web.HTTPError(403, "not logged in to this Jupyter server")
    allowed = await ensure_async(
        handler.authorizer.is_authorized(handler, handler.current_user, action, AUTH_RESOURCE)
    )
    if not allowed:
        raise web.HTTPError(403, f"not authorized to {action} {AUTH_RESOURCE!r}")


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

        invite_identity: Identity | None = None
        """The invite the socket opened with (None: a Jupyter user's socket)."""
        _invite: str | None = None

        def invite_identity_now(self) -> Identity | None:
            """The invite's identity if it still admits (checked in the book
            now, not at the upgrade); :class:`AuthRefused` with the reason if not."""
            if self._invite is None:
                return None
            return service.invites.check(self._invite).identity()

        async def prepare(self, *args: Any, **kwargs: Any) -> None:
            """Authenticate (no login redirect) and authorize before any method runs:
            a valid invite token, or else a Jupyter user the authorizer allows."""
            token = invite_token(self, query=True)
            if token is not None:
                try:
                    self.invite_identity = service.invites.check(token).identity()
                except AuthRefused as exc:
                    raise web.HTTPError(403, f"invite refused: {exc}") from None
                self._invite = token
                return
            pending = super().prepare(*args, **kwargs)
            if pending is not None:
                await pending
            if not self._finished:
                await authorize(self, "execute")

        async def get(self, *args: Any, **kwargs: Any) -> None:
            """engine.io's handshake; ``prepare`` has already decided who gets here."""
            if self.invite_identity is None and self.current_user is None:
                raise web.HTTPError(403, "not logged in to this Jupyter server")
            pending = super().get(*args, **kwargs)
            if pending is not None:
                await pending

    return SignalingSocketHandler


def invite_token(handler: web.RequestHandler, *, query: bool = False) -> str | None:
    """The invite token in ``Authorization: token inv1...``, if that is what it
    holds; with ``query``, else in ``?invite_token=inv1...`` (a name Jupyter
    scrubs from its logs, as it does every parameter containing ``token``).

    The query form exists for browsers, which cannot set a header on a
    WebSocket; only the p2p socket and the invite check read it, so it opens
    nothing else (Jupyter's own handlers never look at ``invite_token``)."""
    scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer") and is_invite(value):
        return value
    if query:
        given = handler.get_query_argument("invite_token", "").strip()
        if is_invite(given):
            return given
    return None


class InviteHandler(web.RequestHandler):
    """``GET {base_url}p2p/invite``: is this invite accepted, and if not, why.

    Not a Jupyter handler: the invite is its only credential, and it answers
    nothing but that (room and expiry, or the reason for a refusal)."""

    def initialize(self, service: SignalingService) -> None:
        self.service = service

    def get(self) -> None:
        status, body = check_invite(self.service.invites, invite_token(self, query=True))
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        for key, value in subresource_headers().items():
            self.set_header(key, value)
        self.finish(json.dumps(body))


class JoinPageHandler(web.RequestHandler):
    """``GET {base_url}p2p/join``: the browser peer's page (p2p_nb.web).

    Not a Jupyter handler: an invite holder, whom Jupyter does not know, opens
    it too. It is the same static page for everyone and carries no secret;
    the credentials (Jupyter's, or the invite) are checked by the socket."""

    def get(self) -> None:
        base_url = self.settings.get("base_url", "/")
        page, headers = render_page(base_url, "jupyter")
        for key, value in headers.items():
            self.set_header(key, value)
        self.finish(page)


class WebStaticHandler(web.StaticFileHandler):
    """The page's scripts and styles (``{base_url}p2p/web/``), open like the page."""

    def set_extra_headers(self, path: str) -> None:
        for key, value in subresource_headers().items():
            self.set_header(key, value)
        self.set_header("Cache-Control", "no-cache")


class HealthHandler(APIHandler):
    """``GET {base_url}p2p/health``: the service's counters, for humans and probes."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, service: SignalingService) -> None:
        self.service = service

    async def prepare(self) -> None:  # type: ignore[override]
        """Counts only, never room names or users, so "read" is enough, for any method."""
        await super().prepare()
        if not self._finished:
            await authorize(self, "read")

    @web.authenticated
    async def get(self) -> None:
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
