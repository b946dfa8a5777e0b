"""Sealed relay sessions: what keeps a relay from speaking for anyone.

When two peers cannot connect directly, their frames go through a third peer
(one that offers the ``relay`` service) or through the signaling server. Both
ends first agree on the relay through signaling (the ``relay`` and
``relay-accept`` signals, which the server addresses by the sender's own
Socket.IO session, so a relaying peer cannot forge them): each side sends an
ephemeral X25519 public key, and both derive two AES-256-GCM keys, one per
direction, bound to the session, both peer ids and the route. Every relayed
frame is then sealed: a relaying peer sees only ciphertext, cannot forge or
alter a frame (the tag fails), and cannot replay or reorder one (the counter
only goes up). The signaling server carries the public keys, so while it is
trusted to introduce peers honestly (until rooms have a secret) an active
server could still sit in the middle; a passive one that only logs learns
nothing it can read.

Pure: no I/O. ``docs/protocol.md`` ("Relay sessions") is the contract and has
test vectors that :func:`derive_keys` and :meth:`RelaySeal.seal` reproduce.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import RelayAuthError

LABEL = "p2p-nb relay v1"
COUNTER_BYTES = 8
TAG_BYTES = 16
SEAL_OVERHEAD = COUNTER_BYTES + 1 + TAG_BYTES
"""Bytes a sealed frame has beyond its plaintext: counter, kind byte, GCM tag."""
KIND_TEXT, KIND_BINARY = 0, 1
SESSION_HEX = 32


def new_session_id() -> str:
    return secrets.token_hex(SESSION_HEX // 2)


def valid_session_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == SESSION_HEX
        and all(c in "0123456789abcdef" for c in value)
    )


class KeyPair:
    """One side's ephemeral X25519 key for one relay session."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private or X25519PrivateKey.generate()

    @property
    def public_b64(self) -> str:
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def shared(self, peer_public_b64: object) -> bytes:
        """The X25519 shared secret with the peer's public key (as sent in its signal)."""
        if not isinstance(peer_public_b64, str) or len(peer_public_b64) > 64:
            raise RelayAuthError("the relay signal's 'key' is not a base64 X25519 key")
        try:
            raw = base64.b64decode(peer_public_b64, validate=True)
            peer = X25519PublicKey.from_public_bytes(raw)
            return self._private.exchange(peer)
        except (binascii.Error, ValueError) as exc:
            raise RelayAuthError(f"the relay signal's 'key' is not an X25519 key: {exc}") from exc


def derive_keys(
    shared: bytes,
    *,
    session: str,
    offerer: str,
    answerer: str,
    via: str,
    salt: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(offerer → answerer key, answerer → offerer key): HKDF-SHA256 over the
    shared secret, salt ``LABEL`` (or, in a room with a secret, the room key's
    relay salt: then even a server that swapped the public keys cannot derive
    them), info the JSON array ``[LABEL, session, offerer, answerer, via]``
    (``via`` is ``""`` for the signaling server's relay), 64 bytes split in two."""
    info = json.dumps([LABEL, session, offerer, answerer, via], separators=(",", ":"))
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=salt or LABEL.encode(), info=info.encode()
    ).derive(shared)
    return okm[:32], okm[32:]


@dataclass
class RelaySeal:
    """Seals what we send and opens what we receive on one relay session.

    Nonce: the 8-byte big-endian counter, left-padded with zeros to 12 bytes;
    each direction has its own key, so a nonce is never used twice under a
    key. Associated data: ``LABEL|sender id|receiver id``."""

    session: str
    local_id: str
    peer_id: str
    send_key: bytes
    recv_key: bytes
    _next_out: int = 0
    _next_in: int = 0

    @classmethod
    def agree(
        cls,
        keys: KeyPair,
        peer_public_b64: object,
        *,
        session: str,
        local_id: str,
        peer_id: str,
        via: str | None,
        salt: bytes | None = None,
    ) -> RelaySeal:
        """Both ends call this with their own key pair and the other's public key
        (and the room key's relay salt, in a room with a secret)."""
        offerer, answerer = sorted((local_id, peer_id))
        forward, backward = derive_keys(
            keys.shared(peer_public_b64),
            session=session,
            offerer=offerer,
            answerer=answerer,
            via=via or "",
            salt=salt,
        )
        ours, theirs = (forward, backward) if local_id == offerer else (backward, forward)
        return cls(session, local_id, peer_id, ours, theirs)

    def _aad(self, sender: str, receiver: str) -> bytes:
        return f"{LABEL}|{sender}|{receiver}".encode()

    def seal(self, data: str | bytes) -> bytes:
        counter = self._next_out
        self._next_out += 1
        if isinstance(data, str):
            plain = bytes([KIND_TEXT]) + data.encode("utf-8")
        else:
            plain = bytes([KIND_BINARY]) + bytes(data)
        head = counter.to_bytes(COUNTER_BYTES, "big")
        body = AESGCM(self.send_key).encrypt(
            head.rjust(12, b"\0"), plain, self._aad(self.local_id, self.peer_id)
        )
        return head + body

    def open(self, frame: object) -> str | bytes:
        """The plaintext of a sealed frame, or :class:`RelayAuthError`."""
        if not isinstance(frame, bytes | bytearray) or len(frame) < SEAL_OVERHEAD:
            raise RelayAuthError(f"relayed frame from {self.peer_id} is not sealed")
        head = bytes(frame[:COUNTER_BYTES])
        counter = int.from_bytes(head, "big")
        if counter < self._next_in:
            raise RelayAuthError(
                f"relayed frame {counter} from {self.peer_id} replayed or reordered "
                f"(expected {self._next_in} or later)"
            )
        try:
            plain = AESGCM(self.recv_key).decrypt(
                head.rjust(12, b"\0"),
                bytes(frame[COUNTER_BYTES:]),
                self._aad(self.peer_id, self.local_id),
            )
        except InvalidTag as exc:
            raise RelayAuthError(
                f"relayed frame {counter} from {self.peer_id} failed authentication "
                "(altered or forged on the way)"
            ) from exc
        self._next_in = counter + 1
        kind, body = plain[0], plain[1:]
        if kind == KIND_TEXT:
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RelayAuthError("sealed text frame is not UTF-8") from exc
        if kind == KIND_BINARY:
            return body
        raise RelayAuthError(f"sealed frame of unknown kind {kind}")
