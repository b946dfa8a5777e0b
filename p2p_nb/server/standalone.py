"""The standalone signaling server: the service on aiohttp, guarded by a token.

For groups whose kernels do not share one Jupyter server. Same endpoint paths
as the Jupyter extension (``/p2p/socket.io/``, ``/p2p/health``) so clients need
only a base URL.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import socketio
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..turn import TurnServer
from ..web import JOIN_PATH, STATIC_DIR, STATIC_PATH, check_remote_server, render_page
from .auth import Authority, Credentials, Identity
from .core import Authenticate, SignalingService
from .headers import subresource_headers
from .invites import InviteBook, check_invite, persistent_invites
from .keyfile import load_or_create_resume_key
from .limits import ServerLimits

log = logging.getLogger(__name__)

SOCKETIO_PATH = "p2p/socket.io"
HEALTH_PATH = "/p2p/health"
INVITE_PATH = "/p2p/invite"
PLAIN_QUERY_KEYS = frozenset({"EIO", "transport", "t"})
"""Query parameters logged as they are; every other value is replaced (tokens)."""


def credentials_from_request(environ: dict[str, Any], auth: Any) -> Credentials:
    """What a client presented: header, Socket.IO auth payload or (old clients) query."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return Credentials(token=value.strip())
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return Credentials(token=str(auth["token"]))
    for key, value in parse_qsl(str(environ.get("QUERY_STRING", ""))):
        if key == "token":
            return Credentials(token=value)
    return Credentials()


def token_from_request(environ: dict[str, Any], auth: Any) -> str | None:
    """The token a client presented, if any (see :func:`credentials_from_request`)."""
    return credentials_from_request(environ, auth).token


def token_authenticator(token: str | None, invites: InviteBook | None = None) -> Authenticate:
    """The adapter's auth hook: accept exactly ``token`` (or anyone, if it is
    None), and this server's invites (each confined to its room)."""
    authority = Authority(token=token, anonymous=token is None, invites=invites)

    async def authenticate(environ: dict[str, Any], auth: Any) -> Identity:
        return authority.identify(credentials_from_request(environ, auth))

    return authenticate


def redact_query(query: str) -> str:
    """``query`` with every value but engine.io's own replaced: tokens never reach a log."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(k, v if k in PLAIN_QUERY_KEYS else "REDACTED") for k, v in pairs],
        safe="",
        quote_via=quote,
    )


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without secrets: the query string's values are redacted.

    aiohttp's default logs the raw request line, ``?token=...`` included, and
    hands it to handlers as an ``extra`` field too; this one never has it.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = redact_query(request.query_string)
        target = request.path + (f"?{query}" if query else "")
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %.3fs',
            request.remote,
            request.method,
            target,
            request.version.major,
            request.version.minor,
            response.status,
            time,
        )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``nosniff`` and a policy on every response (static files, JSON); the join
    page keeps the policy it comes with."""
    for key, value in subresource_headers().items():
        response.headers.setdefault(key, value)


SHUTDOWN_TIMEOUT = 2.0
"""Seconds a stopping server waits for requests still running once every
Socket.IO client was told and disconnected (aiohttp's default is 60)."""


def make_runner(app: web.Application) -> web.AppRunner:
    """The ``AppRunner`` to serve :func:`create_app`'s application with
    (redacted access log, a short shutdown: see :meth:`SignalingService.shutdown`)."""
    return web.AppRunner(
        app, access_log_class=RedactingAccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT
    )


def create_app(
    token: str | None,
    *,
    limits: ServerLimits | None = None,
    cors_allowed_origins: list[str] | None = None,
    client_manager: socketio.AsyncManager | None = None,
    resume_key: bytes | None = None,
    resume_key_file: str | os.PathLike[str] | None = None,
    turn: TurnServer | None = None,
    public_url: str | None = None,
    remote_servers: list[str] | None = None,
    keep_invites: bool = True,
) -> tuple[web.Application, SignalingService]:
    """Build the aiohttp application; run it with :func:`make_runner`.

    ``resume_key`` signs the secrets that let a peer rejoin under its old id.
    It defaults to ``P2P_NB_RESUME_KEY``, else to the key in
    ``resume_key_file`` (created, mode 0600, if missing), else to a random key:
    then a restart gives everyone new ids. It is never derived from the token,
    which every client holds. With ``turn``, every peer that joins gets
    credentials for that TURN server. ``public_url``: the base URL invites
    name (default: the URL each client connected to). ``remote_servers``:
    other signaling services the web client served here may connect to, for
    invite links to them opened here (``server=`` in the fragment): a guest
    who trusts this server keeps the room secret from those operators.

    Invites are signed with a key derived from the resume key and the revoked
    list is kept beside ``resume_key_file``
    (:func:`~.statefile.revocations_path`), so with a key file both outlive a
    restart and a revoked invite stays out. Without a key file nothing is
    kept: invites get a random key per start (they all end at a restart),
    since a kept key with a revoked list in memory only would readmit revoked
    guests. ``keep_invites=False`` gives them a random key even with a key file.
    """
    remotes = [check_remote_server(url) for url in remote_servers or []]
    if resume_key is None and os.environ.get("P2P_NB_RESUME_KEY"):
        resume_key = os.environ["P2P_NB_RESUME_KEY"].encode()
    if resume_key is None and resume_key_file is not None:
        resume_key = load_or_create_resume_key(resume_key_file)
    invites = (
        persistent_invites(resume_key, resume_key_file)
        if keep_invites and resume_key is not None and resume_key_file is not None
        else InviteBook()
    )
    service = SignalingService(
        async_mode="aiohttp",
        authenticate=token_authenticator(token),
        limits=limits,
        cors_allowed_origins=cors_allowed_origins,
        client_manager=client_manager,
        resume_key=resume_key,
        turn=turn,
        public_url=public_url,
        invites=invites,
    )
    service.authenticate = token_authenticator(token, service.invites)
    app = web.Application()

    async def shutdown(app: web.Application) -> None:
        # after the port is closed, before aiohttp waits for open connections
        await service.shutdown()

    async def cleanup(app: web.Application) -> None:
        service.close()

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    app.on_response_prepare.append(add_security_headers)
    service.sio.attach(app, socketio_path=SOCKETIO_PATH)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(service.health())

    async def invite(request: web.Request) -> web.Response:
        environ = {"HTTP_AUTHORIZATION": request.headers.get("Authorization", "")}
        status, body = check_invite(service.invites, credentials_from_request(environ, None).token)
        return web.json_response(body, status=status)

    async def join_page(request: web.Request) -> web.Response:
        page, headers = render_page("/", "standalone", remotes)
        return web.Response(
            text=page,
            headers={k: v for k, v in headers.items() if k != "Content-Type"},
            content_type="text/html",
        )

    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(INVITE_PATH, invite)
    # The browser peer (p2p_nb.web): at the root, where `p2p-nb-signal` points
    # people, and at the path invite links name; its files below /p2p/web/.
    app.router.add_get("/", join_page)
    app.router.add_get("/" + JOIN_PATH, join_page)
    app.router.add_static("/" + STATIC_PATH, STATIC_DIR, show_index=False, follow_symlinks=False)
    return app, service
