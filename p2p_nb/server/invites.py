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

The revocation list holds each revoked id until its invite would have expired
anyway. It is bounded per issuer (:data:`MAX_REVOKED_PER_ISSUER`), so one
credential minting and revoking in a loop fills only its own share, and in
all (:data:`MAX_REVOKED`); entries leave in expiry order from a heap, so a
revoke costs O(log n), never a pass over the whole list. With a
:class:`~.statefile.RevocationLog` the list is also kept in a file (loaded at
start, each revoke appended before it is acknowledged), so a server whose
invite key outlives a restart does not readmit revoked guests after one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..invite import INVITE_PREFIX
from .auth import AuthRefused, Identity
from .statefile import RevocationLog, StateFileError, revocations_path

log = logging.getLogger(__name__)

PREFIX = INVITE_PREFIX
"""Where the token format lives: :mod:`p2p_nb.invite` (the kernel side reads it too)."""
LABEL = b"p2p-nb invite v1|"
DEFAULT_TTL = 24 * 3600.0
MIN_TTL = 60.0
MAX_TTL = 30 * 24 * 3600.0
MAX_TOKEN_CHARS = 512
MAX_REVOKED = 100_000
"""Revoked invites remembered at once, all issuers together."""
MAX_REVOKED_PER_ISSUER = 1_000
"""Revoked, unexpired invites one issuer may have: at this many, it can neither
revoke nor mint more until some expire (others are not affected)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def invite_key(resume_key: bytes) -> bytes:
    """The invite signing key of a server whose resume key is ``resume_key``."""
    return hmac.new(resume_key, b"p2p-nb invite key", hashlib.sha256).digest()


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
        return Identity("invite", self.id, rooms=frozenset({self.room}), expires=self.expires)


class InviteBook:
    """Mints and checks invite tokens; remembers revoked ones until they expire.

    ``key``: the signing key (random per server start unless given: a server
    derives it from its resume key, :func:`invite_key`, where it also keeps
    ``revocations``, so invites survive a restart and revoked ones stay out).
    ``revocations``: the file the revoked list is kept in; it is loaded here
    (:class:`~.statefile.StateFileError` if it cannot be trusted)."""

    def __init__(
        self,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        revocations: RevocationLog | None = None,
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self._clock = clock
        self._log = revocations
        self._revoked: dict[str, float] = {}
        """invite id → its expiry, while it is revoked and not yet expired."""
        self._per_issuer: dict[str, int] = {}
        """issuer → how many of ``_revoked`` it revoked."""
        self._expiries: list[tuple[float, str, str]] = []
        """(expiry, id, issuer) of every entry of ``_revoked``: a heap, soonest first."""
        if revocations is not None:
            for expiry, invite_id, issuer in revocations.load(clock()):
                self._add(expiry, invite_id, issuer)

    @property
    def persistent(self) -> bool:
        """Whether revocations are kept in a file (they outlive this process)."""
        return self._log is not None

    def close(self) -> None:
        """Close the revocations file, if any (the list stays in it)."""
        if self._log is not None:
            self._log.close()

    def _add(self, expiry: float, invite_id: str, issuer: str) -> None:
        self._revoked[invite_id] = expiry
        self._per_issuer[issuer] = self._per_issuer.get(issuer, 0) + 1
        heapq.heappush(self._expiries, (expiry, invite_id, issuer))

    def now(self) -> float:
        """The book's clock (UNIX seconds): expiries are compared with it."""
        return self._clock()

    def is_revoked(self, invite_id: str) -> bool:
        """Whether the invite ``invite_id`` was revoked (O(1): asked on every request)."""
        return invite_id in self._revoked

    def revoked_by(self, issuer: Identity) -> int:
        """How many revoked, unexpired invites ``issuer`` has on the list."""
        self._prune()
        return self._per_issuer.get(issuer_of(issuer), 0)

    def _prune(self) -> None:
        """Forget revocations whose invite has expired: each entry leaves once."""
        now = self._clock()
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, invite_id, issuer = heapq.heappop(heap)
            del self._revoked[invite_id]
            left = self._per_issuer[issuer] - 1
            if left:
                self._per_issuer[issuer] = left
            else:
                del self._per_issuer[issuer]

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, LABEL + payload.encode("ascii"), hashlib.sha256).digest()

    def mint(
        self, room: str, issuer: Identity, ttl: float = DEFAULT_TTL
    ) -> tuple[str, InviteClaim]:
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"an invite lasts {MIN_TTL:g} s to {MAX_TTL:g} s, not {ttl:g}")
        if self.revoked_by(issuer) >= MAX_REVOKED_PER_ISSUER:
            # it could not revoke this one: make none until some expire
            raise AuthRefused(self._issuer_full())
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
        """Revoke a token its ``by`` identity made (:class:`AuthRefused` otherwise,
        or when ``by`` or the whole server has as many revoked invites as allowed)."""
        claim = self.check(token)
        if not hmac.compare_digest(claim.issuer, issuer_of(by)):
            raise AuthRefused("only the member who made an invite may revoke it")
        self._prune()
        if self._per_issuer.get(claim.issuer, 0) >= MAX_REVOKED_PER_ISSUER:
            raise AuthRefused(self._issuer_full())
        if len(self._revoked) >= MAX_REVOKED:
            raise AuthRefused("too many revoked invites on this server")
        if self._log is not None:
            try:  # on disk before anyone is told it is revoked
                self._log.append((claim.expires, claim.id, claim.issuer))
            except OSError as exc:
                log.error("cannot record a revocation: %s", exc)
                raise AuthRefused(
                    "the server could not record the revocation (its state file): "
                    "the invite is not revoked"
                ) from None
        self._add(claim.expires, claim.id, claim.issuer)
        if self._log is not None and self._log.needs_compaction(len(self._revoked)):
            try:  # amortised O(1) per revoke
                self._log.compact(sorted(self._expiries))
            except StateFileError as exc:  # the revoke is on disk: the old log goes on
                log.error("%s", exc)
        return claim

    @staticmethod
    def _issuer_full() -> str:
        return (
            f"you have {MAX_REVOKED_PER_ISSUER} revoked invites that have not expired yet, "
            "the most one member may have: wait until some expire (or make shorter ones)"
        )


def persistent_invites(resume_key: bytes, key_file: str | os.PathLike[str]) -> InviteBook:
    """An invite book whose invites outlive a restart (signed with a key derived
    from ``resume_key``) and whose revocations do too (kept beside ``key_file``).
    Shared by both adapters; :class:`~.statefile.StateFileError` if that file
    cannot be trusted."""
    log_file = RevocationLog(revocations_path(key_file), MAX_REVOKED)
    return InviteBook(invite_key(resume_key), revocations=log_file)


def check_invite(book: InviteBook, token: str | None) -> tuple[int, dict[str, object]]:
    """``GET p2p/invite`` (``Authorization: token inv1...``): whether an invite
    would be accepted, and if not why, before a client tries to join with it.
    Both adapters serve it, with no other credential than the invite."""
    try:
        claim = book.check(token)
    except AuthRefused as exc:
        return 403, {"ok": False, "reason": str(exc)}
    return 200, {"ok": True, "room": claim.room, "expires": claim.expires}
