"""Invite links: what a room member sends a colleague so they can join.

``http(s)://<signaling host>/<base>p2p/join?room=<room>&invite=<token>#<room secret>``

The query names the room and carries the invite token, which the signaling
server checks (it grants joining that one room, until it expires or is
revoked, and nothing else). The fragment is the room secret: a browser never
sends a fragment to a server, and this module hands it to the caller only,
never into a URL the client contacts. Pure: no I/O.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import InviteError

log = logging.getLogger(__name__)

JOIN_PATH = "p2p/join"
INVITE_PREFIX = "inv1."
SECRET_BYTES = 32


def new_room_secret() -> str:
    """A fresh room secret for an invite: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


@dataclass(frozen=True)
class Invite:
    """A parsed invite link."""

    server_url: str
    """The signaling service's base URL (what ``P2PApp.connect(url=...)`` takes)."""
    room: str
    token: str
    secret: str | None

    def __repr__(self) -> str:  # the token and the secret stay out of logs
        return f"Invite(server_url={self.server_url!r}, room={self.room!r})"

    @property
    def url(self) -> str:
        return format_invite(self.server_url, self.room, self.token, self.secret)


def check_server_url(server_url: str) -> str:
    """``server_url`` if an invite can name it (http or https, with a host);
    :class:`InviteError` otherwise. Servers check their ``public_url`` with it
    when they start, so a typo fails there rather than at the first invite."""
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InviteError(f"an invite needs an http(s) server URL, not {server_url!r}")
    return server_url


def same_server(a: str, b: str) -> bool:
    """Whether two base URLs name the same service: scheme and host compared
    without case, default ports and a trailing ``/`` ignored."""

    def norm(url: str) -> tuple[str, str, int | None, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            return (url, "", None, "")
        if port == {"http": 80, "https": 443}.get(scheme):
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")

    return norm(a) == norm(b)


def invite_server_url(connected: str, public_url: str | None, claimed: object) -> str:
    """The base URL a host's invite names: ``public_url`` when the host was
    given one (``connect(public_url=...)``, ``$P2P_NB_PUBLIC_URL``: from the
    user, or from their own Jupyter server for its kernels); else the URL we
    connected to. What the server's invite reply claims (``server_url``) is
    never taken: a signaling server could name another address, whose page
    would read the room secret from the link. A claim that differs from the
    URL we connected to is logged (a warning on logger ``p2p_nb.invite``), so
    a host behind a proxy learns what to pass as ``public_url``."""
    if public_url:
        return public_url
    if isinstance(claimed, str) and claimed and not same_server(claimed, connected):
        log.warning(
            "the signaling server says others reach it at %r, not at %r where we "
            "connected; the invite names %r (pass public_url=... or set "
            "P2P_NB_PUBLIC_URL if that address is right)",
            claimed,
            connected,
            connected,
        )
    return connected


def format_invite(server_url: str, room: str, token: str, secret: str | None) -> str:
    """The invite link for a server's base URL (``http://host:8888/base/``)."""
    parts = urlsplit(check_server_url(server_url))
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    query = urlencode({"room": room, "invite": token})
    fragment = quote(secret, safe="") if secret else ""
    return urlunsplit((parts.scheme, parts.netloc, path + JOIN_PATH, query, fragment))


def parse_invite(link: str) -> Invite:
    """Check an invite link's shape and split it; :class:`InviteError` says what is wrong."""
    if not isinstance(link, str) or len(link) > 8192:
        raise InviteError("an invite is a link of at most 8192 characters")
    parts = urlsplit(link.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InviteError("an invite link starts with http:// or https:// and a host")
    if not parts.path.rstrip("/").endswith(JOIN_PATH):
        raise InviteError(f"an invite link's path ends with /{JOIN_PATH}")
    query = parse_qs(parts.query, keep_blank_values=True)
    rooms, tokens = query.get("room", []), query.get("invite", [])
    if len(rooms) != 1 or not rooms[0]:
        raise InviteError("an invite link names exactly one room (?room=...)")
    if len(tokens) != 1 or not tokens[0].startswith(INVITE_PREFIX):
        raise InviteError(f"an invite link carries one invite token (&invite={INVITE_PREFIX}...)")
    base_path = parts.path.rstrip("/")[: -len(JOIN_PATH)]
    server_url = urlunsplit((parts.scheme, parts.netloc, base_path or "/", "", ""))
    secret = unquote(parts.fragment) if parts.fragment else None
    return Invite(server_url=server_url, room=rooms[0], token=tokens[0], secret=secret)
