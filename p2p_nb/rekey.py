"""Re-keying a room with a secret: what makes "revoked" mean "out".

An invite guest got the room secret in its link, and every key of the room
(:class:`~p2p_nb.roomkey.RoomKey`) comes from room name and secret alone, so
a revoked guest (or the signaling operator it tells) could go on
authenticating descriptions and opening sealed profiles for as long as the
secret lives. A re-key gives the room a new secret that only the remaining
members get, over the links they already have (DTLS, authenticated when they
opened), and from then on the old secret opens nothing.

The room's secrets are numbered: **epoch** 0 is the secret members joined
with; each re-key makes the next. A ``rekey`` message (a data-channel control
message, numbered and acknowledged like chat, so it survives a link failure)
carries ``epoch``, the new ``secret``, its initiator ``by``, ``members`` (peer
id -> the DTLS fingerprint of that member's certificate as the initiator saw
it, ``""`` if unknown) and ``out`` (the peer ids it excludes). A member adopts
one that *supersedes* its current epoch (:meth:`Rekey.supersedes`: a higher
epoch, or the same epoch from a smaller initiator id, so two re-keys at once
end in the same secret everywhere), never one from, or naming as a member, a
peer a re-key it adopted excluded. It then uses the new key for every
description and relay session from then on, closes its links to peers that
are not members, and hands the message on to the members it has links to
(so a member without a link to the initiator gets it too).

**A member away during the re-key** (no open link then) comes back with the
old key. Its descriptions fail the new key; they are accepted with the old
one only if the SDP shows the fingerprint recorded for a member the re-key
named (under that member's peer id, or under any after a server restart
gave it a new one): the DTLS handshake then proves the peer holds that
certificate, which a revoked guest does not. Our descriptions to it use the
old key too. The ``rekey`` waiting in that link's outbox is the
first thing it gets when the channel opens; once it uses the new key, the
old one is dropped for it. A member that was away and whose fingerprint
nobody recorded needs a new invite.

:class:`Rekey`, :class:`RoomEpochs` and :class:`EpochKey` are pure (no I/O
besides the key derivation); :class:`Rekeying` drives them for one room
membership through the little it needs of it (:class:`RekeyHost`).
docs/protocol.md ("Re-keying") is the specification.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import protocol
from ._aiortc import sdp_fingerprint
from .errors import P2PError, PeerUnavailable, ProtocolError, RoomSecretError
from .invite import new_room_secret
from .roomkey import MAX_SECRET_CHARS, MIN_SECRET_CHARS, RoomKey, is_unicode, sdp_identity

if TYPE_CHECKING:
    from ._aiortc import StableCertificate
    from .mesh import Mesh

log = logging.getLogger(__name__)

REKEY_TYPE = "rekey"
"""The data-channel message type (an application-range type: revision 3 peers
that do not know it deliver it as ``unknown_message`` and drop it)."""
MAX_EPOCH = 2**53 - 1
"""Epochs are JSON integers every implementation reads exactly."""
MAX_MEMBERS = 256
MAX_REKEYS_PER_MINUTE = 6
"""Re-keys from one link we derive a key for, per minute: each costs a scrypt
(32 MiB, ~0.2 s), so a hostile member sending ever higher epochs cannot keep
our CPU busy. Honest re-keys cost one or two (a race) per minute."""
_PEER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FINGERPRINT_CHARS = 256


@dataclass(frozen=True)
class Rekey:
    """One ``rekey`` message (the secret stays out of ``repr``)."""

    epoch: int
    secret: str = field(repr=False)
    by: str
    members: dict[str, str]
    out: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        """The message's fields besides the envelope (``v``, ``type``, ``seq``)."""
        return {
            "epoch": self.epoch,
            "secret": self.secret,
            "by": self.by,
            "members": dict(self.members),
            "out": list(self.out),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Rekey:
        """Check every field; :class:`ProtocolError` says which is wrong."""
        epoch, secret, by = payload.get("epoch"), payload.get("secret"), payload.get("by")
        members, out = payload.get("members"), payload.get("out", [])
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= MAX_EPOCH:
            raise ProtocolError(f"rekey: 'epoch' must be an integer from 1 to {MAX_EPOCH}")
        if (
            not isinstance(secret, str)
            or not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS
            or not is_unicode(secret)
        ):
            raise ProtocolError("rekey: 'secret' must be a room secret (8 to 1024 characters)")
        if not isinstance(by, str) or not _PEER_ID.match(by):
            raise ProtocolError("rekey: 'by' must be a peer id")
        if not isinstance(members, dict) or not 1 <= len(members) <= MAX_MEMBERS:
            raise ProtocolError(f"rekey: 'members' must map 1 to {MAX_MEMBERS} peer ids")
        for pid, fp in members.items():
            if not _PEER_ID.match(pid) or not isinstance(fp, str) or len(fp) > _FINGERPRINT_CHARS:
                raise ProtocolError("rekey: 'members' maps peer ids to fingerprints")
        if by not in members:
            raise ProtocolError("rekey: its initiator 'by' is not among its 'members'")
        if not isinstance(out, list) or len(out) > MAX_MEMBERS:
            raise ProtocolError("rekey: 'out' must be a list of peer ids")
        if not all(isinstance(p, str) and _PEER_ID.match(p) and p not in members for p in out):
            raise ProtocolError("rekey: 'out' lists peer ids that are not members")
        return cls(epoch, secret, by, dict(members), tuple(out))

    def supersedes(self, epoch: int, by: str) -> bool:
        """Whether this re-key wins over the epoch ``epoch`` made by ``by``
        (``""`` for the join secret): the higher epoch; at the same epoch the
        smaller initiator id (as offers go from the smaller id)."""
        return self.epoch > epoch or (self.epoch == epoch and by != "" and self.by < by)


class EpochKey(RoomKey):
    """The current epoch's key, as the mesh uses it: what it authenticates
    and checks, plus the way back for a member that missed the re-key."""

    epochs: RoomEpochs

    def check(self, sender: str, receiver: str, description: dict[str, Any]) -> None:
        try:
            super().check(sender, receiver, description)
        except RoomSecretError:
            if not self.epochs.comes_back(sender, receiver, description):
                raise
        else:
            self.epochs.confirmed(sender)

    def authenticate(self, sender: str, receiver: str, description: dict[str, Any]) -> str:
        old = self.epochs.way_back(receiver)
        if old is not None:
            return old.authenticate(sender, receiver, description)
        return super().authenticate(sender, receiver, description)


class RoomEpochs:
    """One member's epochs of a room with a secret: the current key, who was
    excluded, and who may still come back with the previous key."""

    def __init__(self, key: RoomKey, secret: str) -> None:
        self.epoch = 0
        self.by = ""
        self.secret = secret
        self.current: Rekey | None = None
        """The re-key that made our epoch (``None`` for the join secret)."""
        self.previous: RoomKey | None = None
        """The key of the epoch before ours (what a member that missed it has)."""
        self.banned: set[str] = set()
        """Peer ids a re-key we adopted excluded: never members again."""
        self.entitled: dict[str, tuple[RoomKey, str]] = {}
        """Members of our epoch that have not shown it yet (by a description
        with its key, or by sending us its ``rekey``): the key they may still
        have, and the fingerprint their descriptions must show to use it."""
        self._derived: dict[str, deque[float]] = {}
        self.key = self._wrap(key)

    def allow_derivation(self, sender: str, now: float) -> bool:
        """Whether a re-key from the link to ``sender`` may cost a key
        derivation at ``now`` (monotonic seconds): see :data:`MAX_REKEYS_PER_MINUTE`."""
        times = self._derived.setdefault(sender, deque())
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= MAX_REKEYS_PER_MINUTE:
            return False
        times.append(now)
        return True

    def _wrap(self, key: RoomKey) -> EpochKey:
        wrapped = EpochKey(**{f.name: getattr(key, f.name) for f in dataclasses.fields(key)})
        object.__setattr__(wrapped, "epochs", self)
        return wrapped

    def refuses(self, sender: str, rekey: Rekey) -> str | None:
        """Why ``rekey``, from the link to ``sender``, is not adopted (``None``: adopt it)."""
        if sender in self.banned or rekey.by in self.banned:
            return "it comes from a peer an earlier re-key excluded"
        if self.banned & set(rekey.members):
            return "it names as a member a peer an earlier re-key excluded"
        if rekey.epoch == self.epoch and rekey.by == self.by:
            return "duplicate" if rekey.secret == self.secret else "a second secret for one epoch"
        if not rekey.supersedes(self.epoch, self.by):
            return f"epoch {self.epoch} (by {self.by or 'the join'}) wins over it"
        return None

    def adopt(
        self, rekey: Rekey, key: RoomKey, local_id: str, fingerprints: dict[str, str]
    ) -> None:
        """Make ``rekey`` (whose key is ``key``) our epoch. ``fingerprints``:
        the members' fingerprints as our own links saw them, for those the
        initiator did not record."""
        old = self.key
        self.epoch, self.by, self.secret = rekey.epoch, rekey.by, rekey.secret
        self.current = rekey
        self.banned |= set(rekey.out)
        self.key = self._wrap(key)
        previous = RoomKey(old.room, old.auth_key, old.relay_salt, old.profile_key)
        self.previous = previous
        self.entitled = {
            pid: (previous, fp or fingerprints.get(pid, ""))
            for pid, fp in rekey.members.items()
            if pid != local_id
        }

    def confirmed(self, peer_id: str) -> None:
        """``peer_id`` showed our epoch's key (or sent us this epoch's re-key):
        its certificate no longer opens the way back, under any peer id."""
        entry = self.entitled.pop(peer_id, None)
        if entry is not None and entry[1]:
            for pid in [p for p, (_, fp) in self.entitled.items() if fp == entry[1]]:
                del self.entitled[pid]

    def way_back(self, peer_id: str) -> RoomKey | None:
        """The previous key, for descriptions to a member that may not have
        ours yet and whose fingerprint is recorded (its answer must show it)."""
        entry = self.entitled.get(peer_id)
        return entry[0] if entry is not None and entry[1] else None

    def comes_back(self, sender: str, receiver: str, description: dict[str, Any]) -> bool:
        """Whether a description that failed our key is a member's that missed
        the re-key: it passes the previous key and shows the fingerprint
        recorded for a member not yet confirmed, under its peer id or, after a
        server restart gave it a new one, under any."""
        if description.get("type") not in ("offer", "answer") or sender in self.banned:
            return False  # relay sessions are salted with the new key: direct links only
        own = self.entitled.get(sender)
        candidates = [own] if own is not None else list(self.entitled.values())
        try:
            sdp = description.get("sdp")
            shown = sdp_identity(sdp if isinstance(sdp, str) else "")["fingerprints"]
        except RoomSecretError:
            return False
        for previous, fingerprint in candidates:
            if not fingerprint or fingerprint not in shown:
                continue
            try:
                previous.check(sender, receiver, description)
            except RoomSecretError:
                return False
            self.entitled[sender] = (previous, fingerprint)  # our answers use its key
            return True
        return False


class RekeyHost(Protocol):
    """What :class:`Rekeying` needs of the room membership (``P2PApp``)."""

    @property
    def peer_id(self) -> str | None: ...

    @property
    def room(self) -> str | None: ...

    def rekey_links(self) -> Mesh | None:
        """The links of the room we are in (``None`` once we left)."""

    def rekey_members(self) -> list[str]:
        """Everyone in the room but us."""

    def rekey_drop(self, peer_id: str) -> None:
        """A peer that is not a member of the new epoch: out of our room view."""

    def rekey_next_seq(self) -> int:
        """The next number of our chat counter (``rekey`` is numbered like chat)."""

    def rekey_report(self, peer_id: str | None, error: P2PError) -> None: ...

    def rekey_spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    async def rekey_adopted(self, rekey: Rekey, key: EpochKey) -> None:
        """Our epoch is ``rekey``'s now: use ``key`` and re-seal our profile."""


class Rekeying:
    """Re-keys of one room membership: the ones we start, the ones members
    send us, and handing ours to members whose link opens."""

    def __init__(self, host: RekeyHost, epochs: RoomEpochs, certificate: StableCertificate) -> None:
        self.host = host
        self.epochs = epochs
        self.certificate = certificate
        self._lock = asyncio.Lock()
        """One re-key at a time: a derivation takes a while, and the next must
        be judged against the epoch it made."""

    async def start(self, exclude: Iterable[str]) -> int:
        """A new epoch with a new random secret, for everyone but ``exclude``."""
        mesh, me = self.host.rekey_links(), self.host.peer_id
        if mesh is None or me is None:
            raise RoomSecretError("join the room before re-keying it")
        out = set(exclude) - {me}
        async with self._lock:
            seen = self.fingerprints(mesh)
            members = {pid: seen.get(pid, "") for pid in self.host.rekey_members()}
            members = {pid: fp for pid, fp in members.items() if pid not in out}
            members[me] = seen.get(me, "")
            rekey = Rekey(self.epochs.epoch + 1, new_room_secret(), me, members, tuple(sorted(out)))
            await self._adopt(rekey, None)
        return rekey.epoch

    def on_message(self, sender: str, payload: dict[str, Any]) -> None:
        """A ``rekey`` from the link to ``sender``: adopted, handed on, or refused."""
        try:
            rekey = Rekey.from_payload(payload)
        except ProtocolError as exc:
            self.host.rekey_report(sender, exc)
            return
        why = self.epochs.refuses(sender, rekey)
        if why == "duplicate":
            self.epochs.confirmed(sender)  # it has our epoch: nothing to derive
            return
        if why is None and not self.epochs.allow_derivation(sender, time.monotonic()):
            message = f"a re-key refused: more than {MAX_REKEYS_PER_MINUTE} in a minute"
            self.host.rekey_report(sender, RoomSecretError(message))
            return
        self.host.rekey_spawn(self._consider(sender, rekey), f"rekey-{sender}")

    async def _consider(self, sender: str, rekey: Rekey) -> None:
        async with self._lock:
            if self.host.rekey_links() is None:
                return
            why = self.epochs.refuses(sender, rekey)
            if why == "duplicate":
                self.epochs.confirmed(sender)
                return
            if why is None and self.host.peer_id not in rekey.members:
                why = "it does not name us as a member"
            if why is not None:
                log.info("rekey %d by %s from %s not taken: %s", rekey.epoch, rekey.by, sender, why)
                if not why.startswith("epoch"):  # losing a race is no error
                    self.host.rekey_report(sender, RoomSecretError(f"a re-key refused: {why}"))
                return
            await self._adopt(rekey, sender)

    async def _adopt(self, rekey: Rekey, sender: str | None) -> None:
        """Make ``rekey`` our epoch (under the lock)."""
        mesh, room = self.host.rekey_links(), self.host.room
        if mesh is None or room is None:
            return
        key = await asyncio.to_thread(RoomKey.derive, room, rekey.secret)
        if self.host.rekey_links() is not mesh:
            return  # we left (or rejoined) meanwhile
        self.epochs.adopt(rekey, key, self.host.peer_id or "", self.fingerprints(mesh))
        if sender is not None:
            self.epochs.confirmed(sender)
        mesh.room_key = self.epochs.key
        for pid in [p for p in self.host.rekey_members() if p not in rekey.members]:
            self.host.rekey_drop(pid)  # its links close, it is out
        self.send_current([p for p in rekey.members if p != self.host.peer_id])
        await self.host.rekey_adopted(rekey, self.epochs.key)

    def send_current(self, to: list[str]) -> None:
        """Our epoch's ``rekey`` to these members: on an open link now, on one
        opening when it opens; a lost link gets it when it is back
        (:meth:`on_link_open`). Numbered like chat: sent again after a failure."""
        mesh, current = self.host.rekey_links(), self.epochs.current
        if mesh is None or current is None:
            return
        seq = self.host.rekey_next_seq()
        wire = protocol.encode_envelope(REKEY_TYPE, current.payload(), seq=seq)
        for pid in to:
            if pid in mesh.links:
                try:
                    mesh.send(pid, wire, seq=seq)
                except PeerUnavailable:
                    log.info("rekey for %s waits for its link", pid)

    def on_link_open(self, peer_id: str) -> None:
        """A link opened: a member that may not have our epoch gets it first."""
        if peer_id in self.epochs.entitled:
            self.send_current([peer_id])

    def fingerprints(self, mesh: Mesh) -> dict[str, str]:
        """Our certificate's fingerprint and each direct link's peer's, as
        the first ``a=fingerprint`` of an SDP shows them."""
        mine = self.certificate.current().getFingerprints()[0]
        seen = {self.host.peer_id or "": f"{mine.algorithm} {mine.value}".lower()}
        for pid, link in mesh.links.items():
            remote = link.pc.remoteDescription if link.pc is not None else None
            fingerprint = sdp_fingerprint(remote.sdp) if remote is not None else None
            if fingerprint:
                seen[pid] = fingerprint
        return seen
