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

Pure apart from the key derivation: no I/O. docs/protocol.md ("Re-keying")
is the specification.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError, RoomSecretError
from .roomkey import MAX_SECRET_CHARS, MIN_SECRET_CHARS, RoomKey, sdp_identity

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
        if not isinstance(secret, str) or not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
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
