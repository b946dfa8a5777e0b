"""Who is connecting: one model for every way into the signaling service.

Each adapter (the standalone aiohttp runner, the Jupyter extension, later
invite tokens and JupyterHub) only *extracts* what a connection presented into
:class:`Credentials` and asks an :class:`Authority` for the :class:`Identity`
behind it. Everything the service decides about a connection that depends on
who it is (which rooms it may enter, whose resume secret it may present, how
many connections and rooms it may hold) uses that identity, never the raw
credential, so a new way in is one more branch here and nothing else changes.

Framework-neutral on purpose: no aiohttp, Tornado or Jupyter imports.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .invites import InviteBook


class AuthRefused(Exception):
    """Raised by an authority (or an adapter) to refuse a connection."""


@dataclass(frozen=True)
class Identity:
    """The party behind a connection, as far as the signaling service knows it.

    Two connections with equal identities are the same party to the server:
    they share per-identity limits and may resume each other's peer ids (with
    the secret). Holders of one shared token are therefore one identity; only
    distinct credentials (Jupyter users, later invite tokens) tell parties
    apart.
    """

    kind: str
    """How it got in: ``"jupyter"`` (a Jupyter user), ``"token"`` (the standalone
    server's token), ``"anonymous"`` (a server with no token)."""
    subject: str
    """Who, within ``kind``: the Jupyter user name, or a fingerprint of the token
    (never the token itself: identities appear in logs)."""
    rooms: frozenset[str] | None = None
    """The rooms this identity may enter; None means every room."""
    expires: float | None = field(default=None, compare=False)
    """When the credential behind it stops admitting (UNIX seconds; an
    invite's expiry), None for never: the service ends its sessions then.
    Not part of equality: it says how long, not who."""

    @property
    def key(self) -> str:
        """One string per party; bound into resume secrets and limit counters."""
        return f"{self.kind}:{self.subject}"

    def may_enter(self, room: str) -> bool:
        return self.rooms is None or room in self.rooms

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Credentials:
    """What one connection presented, as its adapter found it (no decision yet)."""

    token: str | None = None
    """A bearer token (``Authorization`` header, Socket.IO ``auth`` payload or,
    for old clients, the ``token`` query parameter)."""
    host_user: str | None = None
    """A user the host server (Jupyter) has already authenticated and authorized."""


def token_fingerprint(token: str) -> str:
    """A short, stable name for a token that reveals nothing about it."""
    return hashlib.sha256(b"p2p-nb token fingerprint\n" + token.encode()).hexdigest()[:16]


class Authority:
    """Turns :class:`Credentials` into an :class:`Identity`, or refuses.

    ``token``: the standalone server's shared token (None with ``anonymous``
    accepts everyone). ``trust_host_user``: accept a user the host server
    authenticated (the Jupyter extension), refuse connections without one.
    ``invites``: also accept this server's invite tokens (``inv1.``...), as
    identities confined to their room, whatever else is configured.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        anonymous: bool = False,
        trust_host_user: bool = False,
        invites: InviteBook | None = None,
    ) -> None:
        self._invites = invites
        if token is None and not anonymous and not trust_host_user:
            raise ValueError("an Authority needs a token, trust_host_user or anonymous=True")
        self._token = token
        self._anonymous = anonymous
        self._trust_host_user = trust_host_user

    def identify(self, credentials: Credentials) -> Identity:
        if self._invites is not None and credentials.token is not None:
            from .invites import is_invite

            if is_invite(credentials.token):
                return self._invites.check(credentials.token).identity()
        if self._trust_host_user:
            if credentials.host_user:
                return Identity("jupyter", credentials.host_user)
            raise AuthRefused("not logged in to this Jupyter server")
        if self._token is None:
            return Identity("anonymous", "anyone")
        given = credentials.token
        if given is None:
            raise AuthRefused("no token given; pass token=... to the client")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            raise AuthRefused("wrong token")
        return Identity("token", token_fingerprint(given))
