"""The Jupyter server extension: signaling inside the user's own Jupyter server.

Kernels started by this server learn its URL and token from the environment, so
``p2p_nb`` works in JupyterLab with no configuration at all.
"""

from __future__ import annotations

import dataclasses
import os

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from traitlets import Dict, Int, List, TraitError, Type, Unicode, validate

from ..errors import InviteError
from ..invite import check_server_url
from ..server.core import SignalingService
from ..server.invites import persistent_invites
from ..server.keyfile import load_or_create_resume_key
from ..server.limits import ServerLimits
from ..turn import TurnServer
from ..web import STATIC_DIR
from .handlers import (
    HealthHandler,
    InviteHandler,
    JoinPageHandler,
    WebStaticHandler,
    cancel_pings,
    jupyter_user,
    socket_handler_class,
)

URL_ENV = "P2P_NB_URL"
TOKEN_ENV = "P2P_NB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
ROOT_ENV = "P2P_NB_ROOT_DIR"
PUBLIC_URL_ENV = "P2P_NB_PUBLIC_URL"
"""Set for kernels when ``public_url`` is: the address their invites name."""
WILDCARD_IPS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (compared, never bound)


def reachable_url(serverapp: ServerApp) -> str | None:
    """The URL a kernel on this machine uses to reach the server.

    Not ``connection_url``: it turns a wildcard address into the host name,
    which need not resolve. None when the server listens on a UNIX socket.
    """
    if serverapp.sock:
        return None
    ip = serverapp.ip
    host = "127.0.0.1" if ip in WILDCARD_IPS else f"[{ip}]" if ":" in ip else ip
    scheme = "https" if serverapp.certfile else "http"
    return f"{scheme}://{host}:{serverapp.port}{serverapp.base_url}"


def absolute_root(serverapp: ServerApp) -> str:
    """The folder Jupyter serves files from, as an absolute path."""
    return os.path.abspath(os.path.expanduser(serverapp.root_dir))


class P2PExtensionApp(ExtensionApp):
    """Mounts the signaling service under ``{base_url}p2p/``."""

    name = "p2p_nb"

    max_peers_per_room = Int(
        ServerLimits.max_peers_per_room, help="Most peers one room admits."
    ).tag(config=True)

    client_manager_class = Type(
        default_value=None,
        klass="socketio.AsyncManager",
        allow_none=True,
        help="Socket.IO client manager; None keeps Socket.IO rooms in this process. "
        "p2p-nb's own room rosters stay per process either way, so servers "
        "sharing one manager do not yet see each other's peers.",
    ).tag(config=True)

    client_manager_kwargs = Dict(
        help="Keyword arguments for client_manager_class, e.g. {'url': 'redis://...'}."
    ).tag(config=True)

    turn_urls = List(
        Unicode(),
        help="TURN servers (turn:host:port) for which every joining peer gets "
        "time-limited credentials; needs turn_secret.",
    ).tag(config=True)

    turn_secret = Unicode(
        "", help="The TURN server's shared secret (coturn --static-auth-secret)."
    ).tag(config=True)

    turn_ttl = Int(TurnServer.ttl, help="Seconds the TURN credentials stay valid.").tag(config=True)

    resume_key_file = Unicode(
        "",
        help="File holding the key that signs resume secrets (created with mode 0600 "
        "if missing), so peers keep their ids across a restart of this server; "
        "invites then outlive a restart too, and the revoked ones are kept beside "
        "it (<name>.revoked.json, mode 0600) so they stay out. "
        "Empty (the default): a random key per start, nothing kept.",
    ).tag(config=True)

    public_url = Unicode(
        "",
        help="The base URL others reach this server at (behind a proxy or a tunnel, "
        "e.g. https://jupyter.example.org/user/ana/): what invite links name. "
        "Empty: the URL each kernel connected to.",
    ).tag(config=True)

    @validate("public_url")
    def _check_public_url(self, proposal: dict[str, str]) -> str:
        """A malformed ``public_url`` stops the server at start, not at the first invite."""
        value = proposal["value"]
        try:
            return check_server_url(value) if value else value
        except InviteError as exc:
            raise TraitError(f"P2PExtensionApp.public_url: {exc}") from None

    service: SignalingService | None = None
    _exported: dict[str, str] | None = None

    def initialize_settings(self) -> None:
        limits = dataclasses.replace(ServerLimits(), max_peers_per_room=self.max_peers_per_room)
        manager_class = self.client_manager_class
        manager = manager_class(**self.client_manager_kwargs) if manager_class else None
        resume_key = (
            load_or_create_resume_key(self.resume_key_file) if self.resume_key_file else None
        )
        self.service = SignalingService(
            async_mode="tornado",
            authenticate=jupyter_user,
            limits=limits,
            client_manager=manager,
            # [] switches engine.io's own origin check off: Jupyter's decides.
            cors_allowed_origins=[],
            resume_key=resume_key,
            invites=persistent_invites(resume_key, self.resume_key_file)
            if resume_key is not None
            else None,
            turn=TurnServer(tuple(self.turn_urls), self.turn_secret, self.turn_ttl)
            if self.turn_urls
            else None,
            public_url=self.public_url or None,
        )

    def initialize_handlers(self) -> None:
        assert self.service is not None
        self.handlers.extend(
            [
                (url_path_join("p2p", "socket.io/"), socket_handler_class(self.service)),
                (url_path_join("p2p", "health"), HealthHandler, {"service": self.service}),
                (url_path_join("p2p", "invite"), InviteHandler, {"service": self.service}),
                (url_path_join("p2p", "join"), JoinPageHandler),
                (
                    url_path_join("p2p", "web", "(.*)"),
                    WebStaticHandler,
                    {"path": str(STATIC_DIR)},
                ),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        """Export the server's URL once the port is final.

        At load time the port may still be 0 or about to move (port_retries);
        kernels are only started after this, so they inherit the right values.
        """
        preset = [key for key in (URL_ENV, TOKEN_ENV) if key in os.environ]
        if preset:
            # A user-chosen signaling server wins; never pair it with our token.
            self.log.info("p2p_nb: %s already set; kernels keep it", " and ".join(preset))
            return
        url = reachable_url(serverapp)
        if url is None:
            self.log.info("p2p_nb: server listens on a UNIX socket; %s not set", URL_ENV)
            return
        # JupyterHub's single-user servers have no token of their own; the API
        # token kernels inherit is accepted, and it only ever goes to this server.
        token = serverapp.identity_provider.token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self._exported = {
            URL_ENV: url,
            TOKEN_ENV: token,
            # lets the panel link received files to this server's /files/ handler
            ROOT_ENV: absolute_root(serverapp),
        }
        if self.public_url:
            self._exported[PUBLIC_URL_ENV] = self.public_url
        os.environ.update(self._exported)
        self.log.info("p2p_nb: signaling at %sp2p/; %s set for kernels", url, URL_ENV)

    async def stop_extension(self) -> None:
        """Tell every client, close every socket and forget what we exported.

        Clients hear ``server_shutdown`` and see their transport close instead
        of a dead TCP connection (and reconnect to the next server), and a
        later server in this process does not inherit a stale URL.
        """
        for key, value in (self._exported or {}).items():
            if os.environ.get(key) == value:
                del os.environ[key]
        self._exported = None
        if self.service is None:
            return
        await self.service.shutdown()
        await cancel_pings(self.service.sio.eio)
