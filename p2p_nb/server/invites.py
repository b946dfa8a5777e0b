"""Invite tokens: a credential for one room, for a while, revocable.

A room member asks the server for an invite (the ``invite`` event); the
server signs ``{room, expiry, id, issuer}`` with a key of its own and hands the
token back. Whoever holds it may connect and join that room until it expires
or its issuer revokes it, and nothing else: it is an :class:`~.auth.Identity`
of kind ``invite`` scoped to the room, and on the Jupyter-hosted endpoint it
is accepted by the p2p Socket.IO route only (Jupyter itself does not know it,
so its REST API, kernels and terminals refuse it).

Format: ``inv1.<payload>.<mac>``, both parts URL-safe base64 without padding;
``payload`` is the compact JSON ``{"r": room, "e": expiry (UNIX seconds), "i":
id (16 hex), "b": issuer (16 hex)}``, ``mac`` is HMAC-SHA256(key,
``"p2p-nb invite v1|" + payload``). Framework-neutral and pure but for the
clock and the revocation list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .auth import AuthRefused, Identity

PREFIX = "inv1."
LABEL = b"p2p-nb invite v1|"
DEFAULT_TTL = 24 * 3600.0
MIN_TTL = 60.0
MAX_TTL = 30 * 24 * 3600.0
MAX_TOKEN_CHARS = 512
MAX_REVOKED = 100_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issuer_of(identity: Identity) -> str:
    """A short name for who made an invite (no user name inside the token)."""
    return hashlib.sha256(b"p2p-nb invite issuer|" + identity.key.encode()).hexdigest()[:16]


def is_invite(token: str | None) -> bool:
    return isinstance(token, str) and token.startswith(PREFIX)


@dataclass(frozen=True)
class InviteClaim:
    id: str
    room: str
    expires: float
    issuer: str

    def identity(self) -> Identity:
        return Identity("invite", self.id, rooms=frozenset({self.room}))


class InviteBook:
    """Mints and checks invite tokens; remembers revoked ones until they expire.

    ``key``: the signing key (random per server start unless given: the
    standalone server derives it from its resume key when it keeps one, so
    invites survive a restart exactly when resumes do)."""

    def __init__(self, key: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self._key = key or secrets.token_bytes(32)
        self._clock = clock
        self._revoked: dict[str, float] = {}

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, LABEL + payload.encode("ascii"), hashlib.sha256).digest()

    def mint(
        self, room: str, issuer: Identity, ttl: float = DEFAULT_TTL
    ) -> tuple[str, InviteClaim]:
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"an invite lasts {MIN_TTL:g} s to {MAX_TTL:g} s, not {ttl:g}")
        claim = InviteClaim(
            id=secrets.token_hex(8),
            room=room,
            expires=float(int(self._clock() + ttl)),
            issuer=issuer_of(issuer),
        )
        body = {"r": claim.room, "e": int(claim.expires), "i": claim.id, "b": claim.issuer}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{PREFIX}{payload}.{_b64(self._mac(payload))}", claim

    def check(self, token: object) -> InviteClaim:
        """The claim of a valid, current, unrevoked token, or :class:`AuthRefused`
        saying which of those it is not."""
        if (
            not isinstance(token, str)
            or not token.startswith(PREFIX)
            or len(token) > MAX_TOKEN_CHARS
        ):
            raise AuthRefused("not an invite token")
        payload, _, mac = token[len(PREFIX) :].partition(".")
        try:
            given = _unb64(mac)
            valid = hmac.compare_digest(given, self._mac(payload))
            body = json.loads(_unb64(payload)) if valid else None
        except (binascii.Error, ValueError, UnicodeError):
            valid, body = False, None
        if not valid or not isinstance(body, dict):
            raise AuthRefused(
                "invite not valid here: altered, or made by another server "
                "(or by this one before it restarted without its key file)"
            )
        claim = InviteClaim(
            id=str(body.get("i")),
            room=str(body.get("r")),
            expires=float(body.get("e", 0)),
            issuer=str(body.get("b")),
        )
        now = self._clock()
        if claim.expires <= now:
            raise AuthRefused(f"invite expired {now - claim.expires:.0f} s ago")
        if claim.id in self._revoked:
            raise AuthRefused("invite revoked by the member who made it")
        return claim

    def revoke(self, token: object, by: Identity) -> InviteClaim:
        """Revoke a token its ``by`` identity made (:class:`AuthRefused` otherwise)."""
        claim = self.check(token)
        if not hmac.compare_digest(claim.issuer, issuer_of(by)):
            raise AuthRefused("only the member who made an invite may revoke it")
        now = self._clock()
        self._revoked = {i: e for i, e in self._revoked.items() if e > now}
        if len(self._revoked) >= MAX_REVOKED:
            raise AuthRefused("too many revoked invites on this server")
        self._revoked[claim.id] = claim.expires
        return claim


def check_invite(book: InviteBook, token: str | None) -> tuple[int, dict[str, object]]:
    """``GET p2p/invite`` (``Authorization: token inv1...``): whether an invite
    would be accepted, and if not why, before a client tries to join with it.
    Both adapters serve it, with no other credential than the invite."""
    try:
        claim = book.check(token)
    except AuthRefused as exc:
        return 403, {"ok": False, "reason": str(exc)}
    return 200, {"ok": True, "room": claim.room, "expires": claim.expires}
