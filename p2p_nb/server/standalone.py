"""The standalone signaling server: the service on aiohttp, guarded by a token.

For groups whose kernels do not share one Jupyter server. Same endpoint paths
as the Jupyter extension (``/p2p/socket.io/``, ``/p2p/health``) so clients need
only a base URL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

from ..turn import TurnServer
from .core import Authenticate, AuthRefused, SignalingService
from .limits import ServerLimits

log = logging.getLogger(__name__)

SOCKETIO_PATH = "p2p/socket.io"
HEALTH_PATH = "/p2p/health"


def token_from_request(environ: dict[str, Any], auth: Any) -> str | None:
    """The token a client presented: header, query string or Socket.IO auth payload."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    if query.get("token"):
        return query["token"][0]
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return None


def token_authenticator(token: str | None) -> Authenticate:
    """An auth hook that accepts exactly ``token`` (or anyone, if it is None)."""

    async def authenticate(environ: dict[str, Any], auth: Any) -> str:
        if token is None:
            return "anonymous"
        given = token_from_request(environ, auth)
        if given is None:
            raise AuthRefused("no token given; pass token=... to the client")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthRefused("wrong token")
        return "token-user"

    return authenticate


def create_app(
    token: str | None,
    *,
    limits: ServerLimits | None = None,
    cors_allowed_origins: list[str] | None = None,
    client_manager: socketio.AsyncManager | None = None,
    resume_key: bytes | None = None,
    turn: TurnServer | None = None,
) -> tuple[web.Application, SignalingService]:
    """Build the aiohttp application; run it with ``aiohttp.web.AppRunner``.

    ``resume_key`` signs the secrets that let a peer rejoin under its old id.
    It defaults to ``P2P_NB_RESUME_KEY``, else to a key derived from the token,
    so a server restarted with the same token (or key) lets peers keep their
    ids; without either, a restart gives everyone new ids. With ``turn``,
    every peer that joins gets credentials for that TURN server.
    """
    if resume_key is None and os.environ.get("P2P_NB_RESUME_KEY"):
        resume_key = os.environ["P2P_NB_RESUME_KEY"].encode()
    if resume_key is None and token is not None:
        resume_key = hmac.new(token.encode(), b"p2p-nb resume key", hashlib.sha256).digest()
    service = SignalingService(
        async_mode="aiohttp",
        authenticate=token_authenticator(token),
        limits=limits,
        cors_allowed_origins=cors_allowed_origins,
        client_manager=client_manager,
        resume_key=resume_key,
        turn=turn,
    )
    app = web.Application()

    async def cleanup(app: web.Application) -> None:
        service.close()

    app.on_cleanup.append(cleanup)
    service.sio.attach(app, socketio_path=SOCKETIO_PATH)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(service.health())

    app.router.add_get(HEALTH_PATH, health)
    return app, service
