"""The safety code: six digits both users of a link see, and compare over
another channel (voice, in person) to rule out a man in the middle.

Why a commitment: the DTLS fingerprints travel through the signaling server,
which could answer each side with a certificate of its own. A code computed
from the fingerprints alone can be ground: the party that answers last tries
certificates until both users' codes match (20 bits: a million tries). So the
code also covers a random nonce from each end, and the offerer commits to its
nonce (``commit`` = SHA-256 of it, in the offer) before it sees the
answerer's nonce (in the answer), and reveals it only inside the DTLS channel
(``safety-reveal``). Whoever sits in the middle has to fix its side of both
exchanges before it learns the nonce that decides the code on the other side:
its chance of two matching codes is one in a million per attempt, with no
way to try again unseen.

Why a pin: with one certificate per app (``_aiortc.StableCertificate``) a
reconnect shows the same fingerprints, and DTLS proves the same two ends are
back; the link keeps the code of the first exchange for that pair of
fingerprints, so users compare once. The offerer names the exchange it kept
(``pin``); the answerer answers ``keep`` only if it kept the same one for the
same fingerprints, and each side also checks the fingerprints itself, so a
forged ``keep`` can only cause a new code, never hide one. A new code for a
peer (other fingerprints) is reported as a ``safety_code_changed`` event.

Pure: no I/O. The formulas are in ``docs/protocol.md`` ("Safety code").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from .errors import SafetyCodeError

LABEL = "p2p-nb safety v2"
NONCE_HEX = 64


def new_nonce() -> str:
    return secrets.token_hex(NONCE_HEX // 2)


def _hex(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) != NONCE_HEX
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise SafetyCodeError(f"'{what}' must be {NONCE_HEX} lowercase hex digits")
    return value


def commitment(nonce: str) -> str:
    """SHA-256 of ``LABEL|commit|`` and the nonce's bytes, in hex."""
    return hashlib.sha256(f"{LABEL}|commit|".encode() + bytes.fromhex(nonce)).hexdigest()


def code_digest(
    fp_offerer: str, fp_answerer: str, nonce_offerer: str, nonce_answerer: str
) -> bytes:
    """SHA-256 of the JSON array ``[LABEL, fp_offerer, fp_answerer, nonce_o, nonce_a]``
    (fingerprints as in the SDP's ``a=fingerprint:`` line, lowercased)."""
    data = [LABEL, fp_offerer.lower(), fp_answerer.lower(), nonce_offerer, nonce_answerer]
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).digest()


def code_of(digest: bytes) -> str:
    """The first 8 bytes of the digest, big-endian, modulo 10^6: ``"123 456"``."""
    number = int.from_bytes(digest[:8], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"


def pin_of(digest: bytes) -> str:
    return hashlib.sha256(f"{LABEL}|pin|".encode() + digest).hexdigest()


@dataclass(frozen=True)
class Pinned:
    local_fp: str
    remote_fp: str
    digest: bytes

    @property
    def code(self) -> str:
        return code_of(self.digest)


class SafetyState:
    """One link's safety code across its connection attempts.

    The link calls one method per step: :meth:`offer_fields` /
    :meth:`answer_fields` when it sends a description, :meth:`on_answer` when
    the offerer gets the answer, :meth:`reveal` when the offerer's channel
    opens, :meth:`on_reveal` when the answerer gets the nonce. :attr:`code` is
    ``None`` until the attempt's exchange is complete (or if the peer does not
    take part: an earlier version)."""

    def __init__(self) -> None:
        self.pinned: Pinned | None = None
        self.code: str | None = None
        self._nonce: str | None = None
        self._commit: str | None = None
        self._their_nonce: str | None = None
        self._fps: tuple[str, str] | None = None  # (local, remote) of this attempt
        self._keep = False

    def _reset(self) -> None:
        self.code = None
        self._nonce = self._commit = self._their_nonce = None
        self._fps = None
        self._keep = False

    # ------------------------------------------------------------ offerer
    def offer_fields(self) -> dict[str, Any]:
        self._reset()
        self._nonce = new_nonce()
        fields: dict[str, Any] = {"commit": commitment(self._nonce)}
        if self.pinned is not None:
            fields["pin"] = pin_of(self.pinned.digest)
        return fields

    def on_answer(
        self, signal: dict[str, Any], local_fp: str | None, remote_fp: str | None
    ) -> None:
        if self._nonce is None or local_fp is None or remote_fp is None:
            return
        if "nonce" not in signal:  # a peer of the earlier protocol: no code
            self._nonce = None
            return
        self._their_nonce = _hex(signal.get("nonce"), "nonce")
        self._fps = (local_fp, remote_fp)
        self._keep = signal.get("keep") is True and self._same_pair(local_fp, remote_fp)

    def reveal(self) -> tuple[str | None, Pinned | None]:
        """The nonce to send in ``safety-reveal`` (``None``: no exchange this
        attempt) and the code now in force; the second item is the pin it
        replaced, if the code changed."""
        if self._nonce is None or self._their_nonce is None or self._fps is None:
            return None, None
        nonce = self._nonce
        local_fp, remote_fp = self._fps
        digest = code_digest(local_fp, remote_fp, nonce, self._their_nonce)
        return nonce, self._settle(digest)

    # ----------------------------------------------------------- answerer
    def answer_fields(
        self, offer: dict[str, Any], local_fp: str | None, remote_fp: str | None
    ) -> dict[str, Any]:
        self._reset()
        if "commit" not in offer or local_fp is None or remote_fp is None:
            return {}
        self._commit = _hex(offer.get("commit"), "commit")
        self._nonce = new_nonce()
        self._fps = (local_fp, remote_fp)
        pin = offer.get("pin")
        self._keep = (
            isinstance(pin, str)
            and self.pinned is not None
            and self._same_pair(local_fp, remote_fp)
            and hmac.compare_digest(pin, pin_of(self.pinned.digest))
        )
        return {"nonce": self._nonce, "keep": self._keep}

    def on_reveal(self, nonce: object) -> Pinned | None:
        """Check the offerer's nonce against its commitment; returns the pin the
        code replaced (if it changed). Raises :class:`SafetyCodeError` if the
        nonce does not match: someone in the middle, or a broken peer."""
        if self._commit is None or self._nonce is None or self._fps is None:
            raise SafetyCodeError("safety-reveal without a commitment in this attempt's offer")
        their = _hex(nonce, "nonce")
        if not hmac.compare_digest(commitment(their), self._commit):
            self._commit = None
            raise SafetyCodeError(
                "the peer's safety nonce does not match the commitment in its offer: "
                "the link may have a man in the middle; no safety code is shown"
            )
        self._commit = None
        local_fp, remote_fp = self._fps
        return self._settle(code_digest(remote_fp, local_fp, their, self._nonce))

    # -------------------------------------------------------------- common
    def _same_pair(self, local_fp: str, remote_fp: str) -> bool:
        p = self.pinned
        return p is not None and (p.local_fp, p.remote_fp) == (local_fp, remote_fp)

    def _settle(self, digest: bytes) -> Pinned | None:
        assert self._fps is not None
        old = self.pinned
        if self._keep and old is not None:
            self.code = old.code
            return None
        self.pinned = Pinned(self._fps[0], self._fps[1], digest)
        self.code = self.pinned.code
        # Same certificates at both ends: DTLS proves the same two ends, so a new
        # code (a pin one side lost) is not news. Other certificates are.
        if old is None or (old.local_fp, old.remote_fp) == self._fps:
            return None
        return old
