"""The room secret: what takes the signaling operator out of the trust base.

A room may have a secret (the part of an invite URL after ``#``, or a
passphrase given to ``join_room(secret=...)``). It never leaves the peers: it
is stretched with scrypt into a room key, and from that key come

- the **description authenticator**: every offer and answer carries ``auth``,
  an HMAC over what identifies the DTLS and ICE session (room, both peer ids,
  the SDP's fingerprints, ICE username fragment and password, and the
  safety-code fields). A server that swaps a fingerprint to sit in the middle
  cannot make a valid ``auth`` without the secret, so the peer refuses the
  description and the link is never opened;
- the **relay salt**: relay sessions (:mod:`p2p_nb.relaykey`) mix it into their
  key derivation, so a server that swaps the X25519 keys of a relay session
  still cannot read or forge relayed frames;
- the **profile key**: a member's name and capabilities go to the server
  sealed (``{"sealed": ...}`` in place of the capabilities, a pseudonym in
  place of the name), bound to its peer id, so the operator sees neither and
  cannot move one member's profile onto another.

Pure: no I/O. The formulas and test vectors are in ``docs/protocol.md``
("Room secret").
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import RoomSecretError

LABEL = "p2p-nb room v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
"""scrypt cost: 32 MiB of memory and ~0.2 s per derivation here, so guessing a
passphrase offline costs the same per guess; an invite's secret is 32 random
bytes anyway."""
MIN_SECRET_CHARS = 8
MAX_SECRET_CHARS = 1024
RECOMMENDED_SECRET_CHARS = 16
"""Below this a passphrase draws a warning (:func:`secret_warning`): the
signaling operator sees authenticators made with the key, so it can test
guesses offline at scrypt's cost, and short passphrases fall to that."""
AUTH_FIELDS = ("attempt", "commit", "nonce", "pin", "session", "key", "via")
"""String fields of a signal besides the SDP that the authenticator covers
(a description's attempt tag and safety-code fields, a relay request's session,
key and route); ``keep`` is covered as a boolean."""


def sdp_identity(sdp: str) -> dict[str, Any]:
    """What in an SDP identifies its DTLS and ICE session: every
    ``a=fingerprint:`` value (lowercased, in order) and the ``a=ice-ufrag:`` and
    ``a=ice-pwd:`` values.

    Only one set of ICE credentials can be authenticated, while a parser may
    take any of several (aiortc keeps the last one of a media section, and a
    media section's own over the session's): so an SDP that gives ICE
    credentials twice in one level (the session part or one ``m=`` section),
    gives different ones in two levels, or repeats a fingerprint's hash
    function in one level, is refused (:class:`RoomSecretError`): it was
    altered (nobody's stack writes one), and authenticating it would let the
    duplicate through unchecked."""
    fingerprints: list[str] = []
    values: dict[str, set[str]] = {"ice-ufrag": set(), "ice-pwd": set()}
    level: set[str] = set()
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            level = set()
            continue
        attr, colon, value = line[2:].partition(":")
        if not line.startswith("a=") or not colon or attr not in ("fingerprint", *values):
            continue
        value = value.strip()
        if attr == "fingerprint":
            fingerprints.append(value.lower())
            what = f"a=fingerprint for {(value.split() or [''])[0].lower()}"
        else:
            values[attr].add(value)
            what = f"a={attr}"
        if what in level:
            raise RoomSecretError(f"its SDP repeats {what} in one section")
        level.add(what)
    for attr, seen in values.items():
        if len(seen) > 1:
            raise RoomSecretError(f"its SDP gives {len(seen)} different a={attr} values")
    ufrag = next(iter(values["ice-ufrag"]), "")
    pwd = next(iter(values["ice-pwd"]), "")
    return {"fingerprints": fingerprints, "ice_ufrag": ufrag, "ice_pwd": pwd}


def is_unicode(text: str) -> bool:
    """Whether ``text`` has a UTF-8 encoding (JSON's ``\\ud800`` escapes give
    lone surrogates, which have none): JavaScript's ``isWellFormed``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def secret_warning(secret: str) -> str | None:
    """What to tell the user about a passphrase too short to resist offline
    guessing (None for a good one; :func:`p2p_nb.new_room_secret` makes 43
    random characters). Never includes the secret."""
    if len(secret) >= RECOMMENDED_SECRET_CHARS:
        return None
    return (
        f"this room secret has only {len(secret)} characters: whoever runs the "
        "signaling server sees what is authenticated with it and can try guesses "
        "offline. Use p2p_nb.new_room_secret() (what invites carry) or a passphrase "
        f"of at least {RECOMMENDED_SECRET_CHARS} characters, e.g. five random words"
    )


@functools.lru_cache(maxsize=16)
def _stretch(room: str, secret: str) -> bytes:
    return Scrypt(
        salt=f"{LABEL}|{room}".encode(), length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P
    ).derive(secret.encode("utf-8"))


def _expand(master: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=LABEL.encode(), info=purpose.encode()
    ).derive(master)


@dataclass(frozen=True)
class RoomKey:
    """The keys of one room's secret (never its text, never logged)."""

    room: str
    auth_key: bytes
    relay_salt: bytes
    profile_key: bytes

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"RoomKey(room={self.room!r})"

    @classmethod
    def derive(cls, room: str, secret: str) -> RoomKey:
        """``master = scrypt(secret, salt = LABEL|room, N=2^15, r=8, p=1, 32 bytes)``;
        ``auth_key = HKDF(master, info="auth")``, ``relay_salt = HKDF(master,
        info="relay")``, ``profile_key = HKDF(master, info="profile")``
        (HKDF-SHA256, salt ``LABEL``)."""
        if not isinstance(secret, str):
            raise RoomSecretError("a room secret is a string")
        if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
            raise RoomSecretError(
                f"a room secret has {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters "
                f"(this one has {len(secret)})"
            )
        if not is_unicode(secret):
            raise RoomSecretError(
                "a room secret must be valid Unicode text (it has a lone surrogate)"
            )
        master = _stretch(room, secret)
        return cls(
            room, _expand(master, "auth"), _expand(master, "relay"), _expand(master, "profile")
        )

    def _profile_aad(self, peer_id: str) -> bytes:
        return f"{LABEL}|profile|{self.room}|{peer_id}".encode()

    def seal_profile(self, peer_id: str, name: str, capabilities: dict[str, Any]) -> dict[str, str]:
        """What we tell the server our capabilities are: ``{"sealed": base64(nonce
        (12 random bytes) ‖ AES-256-GCM(profile_key, JSON {"n": name, "c":
        capabilities}, aad = LABEL|profile|room|peer_id))}``."""
        nonce = os.urandom(12)
        plain = json.dumps({"n": name, "c": capabilities}, separators=(",", ":")).encode()
        sealed = AESGCM(self.profile_key).encrypt(nonce, plain, self._profile_aad(peer_id))
        return {"sealed": base64.b64encode(nonce + sealed).decode("ascii")}

    def open_profile(self, peer_id: str, capabilities: object) -> tuple[str, dict[str, Any]] | None:
        """(name, capabilities) from a peer's sealed capabilities; ``None`` if they
        are not sealed; :class:`RoomSecretError` if they do not open for this peer."""
        if not isinstance(capabilities, dict) or "sealed" not in capabilities:
            return None
        try:
            raw = base64.b64decode(str(capabilities["sealed"]), validate=True)
            plain = AESGCM(self.profile_key).decrypt(raw[:12], raw[12:], self._profile_aad(peer_id))
            profile = json.loads(plain)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise RoomSecretError(
                f"the profile of {peer_id} does not open with this room's secret "
                "(another secret, or moved or altered on the way)"
            ) from exc
        name = profile.get("n") if isinstance(profile, dict) else None
        caps = profile.get("c") if isinstance(profile, dict) else None
        if not isinstance(name, str) or not isinstance(caps, dict):
            raise RoomSecretError(f"the sealed profile of {peer_id} is malformed")
        return name, caps

    def _message(self, sender: str, receiver: str, signal: dict[str, Any]) -> bytes:
        """Compact JSON ``[LABEL, room, sender, receiver, type, [fingerprints],
        ice_ufrag, ice_pwd, [attempt, commit, nonce, pin, session, key, via], keep]``
        (absent strings are ``""``, ``keep`` is ``true`` or ``false``), in UTF-8
        with non-ASCII characters unescaped: the same bytes as JavaScript's
        ``JSON.stringify`` (docs/protocol.md, "Authenticator")."""
        sdp = signal.get("sdp")
        ident = sdp_identity(sdp if isinstance(sdp, str) else "")
        fields = [signal.get(k) for k in AUTH_FIELDS]
        data = [
            LABEL,
            self.room,
            sender,
            receiver,
            str(signal.get("type", "")),
            ident["fingerprints"],
            ident["ice_ufrag"],
            ident["ice_pwd"],
            [f if isinstance(f, str) else "" for f in fields],
            signal.get("keep") is True,
        ]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    def authenticate(self, sender: str, receiver: str, description: dict[str, Any]) -> str:
        """``auth`` for a description ``sender`` sends to ``receiver``."""
        mac = hmac.new(self.auth_key, self._message(sender, receiver, description), hashlib.sha256)
        return mac.hexdigest()

    def check(self, sender: str, receiver: str, description: dict[str, Any]) -> None:
        """Raise :class:`RoomSecretError` unless ``auth`` is right (constant time)."""
        given = description.get("auth")
        if not isinstance(given, str) or not given:
            raise RoomSecretError(
                f"the {description.get('type')} from {sender} has no room authenticator: "
                "it does not know the room secret (or a server removed it)"
            )
        try:
            want = self.authenticate(sender, receiver, description)
        except UnicodeEncodeError as exc:  # a lone surrogate: no bytes to authenticate
            raise RoomSecretError(
                f"the {description.get('type')} from {sender} is not valid Unicode text"
            ) from exc
        except RoomSecretError as exc:  # an SDP whose identity is ambiguous
            raise RoomSecretError(
                f"the {description.get('type')} from {sender} is refused: {exc} "
                "(altered on the way: only one set of ICE credentials can be authenticated)"
            ) from exc
        if len(given) != len(want) or not hmac.compare_digest(given, want):
            raise RoomSecretError(
                f"the {description.get('type')} from {sender} has a wrong room authenticator: "
                "another secret, or altered on the way (someone in the middle)"
            )
