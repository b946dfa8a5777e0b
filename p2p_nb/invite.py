"""Invite links: what a room member sends a colleague so they can join.

``http(s)://<signaling host>/<base>p2p/join#room=<room>&invite=<token>&secret=<room secret>``

Everything is in the fragment, which a browser never sends to a server (nor
puts in a ``Referer``), so neither the invite token nor the room secret lands
in the access logs of the server or of a proxy in front of it. The invite
token is the credential the signaling server checks (it grants joining that
one room, until it expires or is revoked, and nothing else); the room secret
never goes to any server: this module hands it to the caller only, never into
a URL the client contacts. A ``server=<base URL>`` in the fragment names the
signaling service when the page in front is another one (a client the guest
trusts, :func:`client_link`). The first form,
``...p2p/join?room=<room>&invite=<token>#<room secret>``, is still read.
Pure: no I/O.
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
    fields = {"room": room, "invite": token, **({"secret": secret} if secret else {})}
    fragment = urlencode(fields, quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, path + JOIN_PATH, "", fragment))


def client_link(link: str, client_url: str) -> str:
    """The invite ``link`` opened by the web client at ``client_url`` (the base
    URL of a server the guest trusts, e.g. its own Jupyter), which then
    connects to the link's signaling server (``server=`` in the fragment).

    Whoever serves the page a browser runs can read the room secret in the
    fragment; this way that is the guest's own server, not the signaling
    operator. That server must allow the link's server
    (``p2p-nb-signal --remote-server``), and the signaling server must let
    that page's origin connect (its ``--cors-origin``); the Python client
    reads such a link as the original."""
    invite = parse_invite(link)
    parts = urlsplit(check_server_url(client_url))
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    fields = {"room": invite.room, "invite": invite.token, "server": invite.server_url}
    if invite.secret:
        fields["secret"] = invite.secret
    fragment = urlencode(fields, quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, path + JOIN_PATH, "", fragment))


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name, [])
    if len(values) > 1:
        raise InviteError(f"an invite link gives {name!r} once, not {len(values)} times")
    return values[0] if values else None


def parse_invite(link: str) -> Invite:
    """Check an invite link's shape and split it; :class:`InviteError` says what is wrong."""
    if not isinstance(link, str) or len(link) > 8192:
        raise InviteError("an invite is a link of at most 8192 characters")
    parts = urlsplit(link.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InviteError("an invite link starts with http:// or https:// and a host")
    if not parts.path.rstrip("/").endswith(JOIN_PATH):
        raise InviteError(f"an invite link's path ends with /{JOIN_PATH}")
    if "=" in parts.fragment:  # everything in the fragment
        fields = parse_qs(parts.fragment, keep_blank_values=True)
        secret = _one(fields, "secret") or None
        server = _one(fields, "server")
        if "invite" in parse_qs(parts.query):
            raise InviteError("an invite link carries its token in the fragment only")
    else:  # the first form: ?room=...&invite=...#<secret>
        fields = parse_qs(parts.query, keep_blank_values=True)
        secret = unquote(parts.fragment) if parts.fragment else None
        server = None
    room, token = _one(fields, "room"), _one(fields, "invite")
    if not room:
        raise InviteError("an invite link names exactly one room (#room=...)")
    if token is None or not token.startswith(INVITE_PREFIX):
        raise InviteError(f"an invite link carries one invite token (&invite={INVITE_PREFIX}...)")
    if server is not None:
        server_url = check_server_url(server)
    else:
        base_path = parts.path.rstrip("/")[: -len(JOIN_PATH)]
        server_url = urlunsplit((parts.scheme, parts.netloc, base_path or "/", "", ""))
    return Invite(server_url=server_url, room=room, token=token, secret=secret)
