"""The signaling service: rooms, presence and targeted relay over Socket.IO.

Framework-neutral: :class:`SignalingService` builds a python-socketio
``AsyncServer`` for a given ``async_mode``; the standalone runner attaches it to
aiohttp, the Jupyter extension to Tornado. It never sees chat or file data:
peers exchange only what WebRTC needs to find each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from .._version import __version__
from ..invite import check_server_url
from ..names import NameProblem, clean_name, name_key
from ..turn import TurnServer
from .auth import AuthRefused, Identity
from .invites import DEFAULT_TTL, InviteBook, invite_key
from .limits import MAX_ROOM_CHARS, ROOM_NAME_RE, ServerLimits
from .sessions import REASONS, SessionEnds, end_session

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SIGNAL_TYPES = frozenset(
    {"offer", "answer", "candidate", "refuse", "invite", "relay", "relay-accept"}
)
DESCRIPTION_FIELDS = {"attempt": 64, "commit": 64, "pin": 64, "nonce": 64, "auth": 64}
"""Optional string fields an offer or answer may carry, with their longest length
(the attempt tag and the safety-code exchange: opaque to the server)."""
RELAY_FIELDS = {"via": 64, "session": 64, "key": 64, "auth": 64}
"""String fields of ``relay`` (``relay-accept`` has no ``via``): opaque to the server."""
PEER_ID_RE = re.compile(r"^[0-9a-f]{16}$")

Authenticate = Callable[[dict[str, Any], Any], Awaitable[Identity]]
"""Auth hook of an adapter: given the WSGI-style environ and the Socket.IO
``auth`` payload, extract the credentials, ask an :class:`~.auth.Authority` and
return the :class:`~.auth.Identity`, or raise :class:`AuthRefused`."""

__all__ = ["AuthRefused", "Authenticate", "Identity", "RequestRejected", "SignalingService"]


class RequestRejected(Exception):
    """A client event that breaks the protocol or a limit; becomes an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PeerRecord:
    sid: str
    identity: Identity
    remote_ip: str
    peer_id: str | None = None
    room: str | None = None
    name: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    """The client said it rejoins with ``resume`` after a drop: keep its slot."""
    tokens: float = 0.0
    last_refill: float = field(default_factory=time.monotonic)

    def public(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "name": self.name, "capabilities": self.capabilities}


@dataclass
class AwaySlot:
    """A joined peer whose connection dropped: its place is kept for a grace period."""

    record: PeerRecord
    expiry: asyncio.TimerHandle | None = None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _bounded_json(value: Any, limit: int, what: str) -> None:
    try:
        size = len(json.dumps(value, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise RequestRejected("invalid", f"{what} is not JSON-serialisable") from exc
    if size > limit:
        raise RequestRejected("too_large", f"{what} is {size} bytes; the limit is {limit}")


def _need_str(data: dict[str, Any], key: str, max_len: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RequestRejected("invalid", f"'{key}' must be a non-empty string")
    if len(value) > max_len:
        raise RequestRejected("too_large", f"'{key}' is longer than {max_len} characters")
    return value


class SignalingNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The Socket.IO namespace ``/``: one ``on_<event>`` method per client event."""

    def __init__(self, service: SignalingService) -> None:
        super().__init__("/")
        self.service = service

    # python-socketio dispatches every event here; wrapping it gives one place
    # for rate limiting, unknown events and turning rejections into replies.
    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        peer = self.service.peers.get(sid)
        try:
            if peer is None:
                raise RequestRejected("not_connected", "connection not registered")
            over = self.service.sessions.why_over(peer.identity)
            if over is not None:
                # the invite ran out or was revoked since the connect: this
                # refusal is the last reply, then the session ends
                self.service.sessions.end(sid, over)
                raise RequestRejected(f"invite_{over}", REASONS[over])
            self._spend_token(peer)
            handler = getattr(self, f"on_{event}", None)
            if handler is None or event.startswith("_"):
                raise RequestRejected("unknown_event", f"unknown event {event!r}")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise RequestRejected("invalid", f"'{event}' expects a JSON object")
            if event != "relay":  # relay carries bytes; it checks its own size
                _bounded_json(data, self.service.limits.max_payload_bytes, f"{event!r} payload")
            return await handler(sid, data)
        except RequestRejected as exc:
            log.info("rejected %s from %s: %s", event, sid, exc.message)
            await self.emit(
                "error", {"event": event, "code": exc.code, "message": exc.message}, to=sid
            )
            return _error(exc.code, exc.message)

    def _spend_token(self, peer: PeerRecord) -> None:
        limits = self.service.limits
        now = time.monotonic()
        peer.tokens = min(
            float(limits.rate_burst),
            peer.tokens + (now - peer.last_refill) * limits.rate_per_second,
        )
        peer.last_refill = now
        if peer.tokens < 1.0:
            raise RequestRejected(
                "rate_limited",
                f"more than {limits.rate_per_second:g} events/s; slow down",
            )
        peer.tokens -= 1.0

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        svc = self.service
        try:
            identity = await svc.authenticate(environ, auth)
        except AuthRefused as exc:
            log.info("refused connection %s: %s", sid, exc)
            raise socketio.exceptions.ConnectionRefusedError(f"unauthorized: {exc}") from exc
        cap = svc.limits.max_connections_per_identity
        if svc.connections[identity.key] >= cap:
            log.info("refused connection %s: %s has %d connections", sid, identity, cap)
            raise socketio.exceptions.ConnectionRefusedError(
                f"too_many_connections: these credentials already hold {cap} connections"
            )
        handler = environ.get("tornado.handler")
        remote_ip = (
            handler.request.remote_ip
            if handler is not None
            else str(environ.get("REMOTE_ADDR", ""))
        )
        svc.peers[sid] = PeerRecord(
            sid=sid,
            identity=identity,
            remote_ip=remote_ip,
            tokens=float(svc.limits.rate_burst),
        )
        svc.connections[identity.key] += 1
        svc.sessions.watch(sid, identity.expires)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        # The peer may come back (same id, ``resume``) within the grace period.
        svc = self.service
        svc.sessions.forget(sid)
        for waiter in svc.hangups.pop(sid, ()):
            if not waiter.done():
                waiter.set_result(False)  # a probe of it has its answer: gone
        await svc.step_away(sid)
        peer = svc.peers.pop(sid, None)
        if peer is not None:
            svc.connections[peer.identity.key] -= 1
            if svc.connections[peer.identity.key] <= 0:
                del svc.connections[peer.identity.key]

    async def on_join(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        svc = self.service
        limits = svc.limits
        peer = svc.peers[sid]
        if peer.room is not None:
            raise RequestRejected("already_joined", f"already in room {peer.room!r}; leave first")
        room = _need_str(data, "room", MAX_ROOM_CHARS)
        if not ROOM_NAME_RE.match(room):
            raise RequestRejected(
                "invalid_room",
                f"room names are 1-{MAX_ROOM_CHARS} letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
        if not peer.identity.may_enter(room):
            raise RequestRejected("forbidden_room", f"these credentials do not admit to {room!r}")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise RequestRejected("invalid", "'name' must be a string")
        try:
            name = clean_name(name, limits.max_name_length)
        except NameProblem as exc:
            raise RequestRejected(exc.code, exc.message) from None
        caps = self._capabilities(data)
        resumable = data.get("resumable", False)
        if not isinstance(resumable, bool):
            raise RequestRejected("invalid", "'resumable' must be a boolean")
        peer.resumable = resumable or data.get("resume") is not None
        if data.get("resume") is not None:
            return await self._resume(sid, peer, room, name, caps, data["resume"])
        peer_id = secrets.token_hex(8)
        self._check_room_capacity(peer, room)
        await self._check_name_free(room, name, peer_id, peer.identity)
        return await self._enter(sid, peer, room, peer_id, name, caps)

    def _check_room_capacity(self, peer: PeerRecord, room: str) -> None:
        """Refuse a newcomer to a full room, or a new room past the server's or identity's cap."""
        svc = self.service
        limits = svc.limits
        members = svc.rooms.get(room)
        if members is None:
            if len(svc.rooms) >= limits.max_rooms:
                raise RequestRejected(
                    "server_full", f"the server already has {limits.max_rooms} rooms"
                )
            if svc.rooms_created[peer.identity.key] >= limits.max_rooms_per_identity:
                raise RequestRejected(
                    "too_many_rooms",
                    f"these credentials already created {limits.max_rooms_per_identity} rooms "
                    "that still exist",
                )
        elif len(members) >= limits.max_peers_per_room:
            raise RequestRejected(
                "room_full", f"room {room!r} already has {limits.max_peers_per_room} peers"
            )

    async def _check_name_free(
        self, room: str, name: str, peer_id: str, identity: Identity
    ) -> None:
        """Refuse a name another member of ``room`` already shows (case and width folded).

        Members that are away keep their name (they are still in the room),
        except against the same identity: a kernel restarted within the grace
        period takes its name back, and its old slot leaves at once. So does
        a slot of the same identity whose connection the server still counts
        as open but that does not answer a ``probe`` (a restarted kernel's
        old socket, not yet seen to close): it is hung up. A live connection
        of the same identity (a second notebook of the same user) answers and
        keeps its name.
        """
        svc = self.service
        key = name_key(name or peer_id)
        for other in list(svc.rooms.get(room, {})):
            if other == peer_id or name_key(svc.member(room, other)["name"]) != key:
                continue
            slot = svc.away.get(other)
            if slot is not None and slot.record.identity == identity:
                announced = svc.expire(other)
                if announced is not None:
                    await announced
                continue
            old_sid = svc.rooms.get(room, {}).get(other)
            old = svc.peers.get(old_sid) if old_sid is not None else None
            if (
                old_sid is not None
                and old is not None
                and old.identity == identity
                and not await self._still_alive(old_sid, other, notify=False)
            ):
                if svc.peers.get(old_sid) is old and old.peer_id == other:
                    await svc.remove(old_sid, "disconnected")
                    with contextlib.suppress(socketio.exceptions.SocketIOError):
                        await svc.sio.disconnect(old_sid)
                    log.info("%s: connection %s did not answer; its name is free", other, old_sid)
                continue
            raise RequestRejected(
                "name_taken", f"another member of {room!r} already uses this name"
            )

    def _capabilities(self, data: dict[str, Any]) -> dict[str, Any]:
        caps = data.get("capabilities", {})
        if not isinstance(caps, dict):
            raise RequestRejected("invalid", "'capabilities' must be an object")
        _bounded_json(caps, self.service.limits.max_capabilities_bytes, "capabilities")
        return caps

    async def _enter(
        self,
        sid: str,
        peer: PeerRecord,
        room: str,
        peer_id: str,
        name: str,
        caps: dict[str, Any],
        *,
        resumed: bool = False,
        announce: bool = True,
    ) -> dict[str, Any]:
        svc = self.service
        members = svc.rooms.get(room, {})
        others = [svc.member(room, pid) for pid in members if pid != peer_id]
        peer.peer_id = peer_id
        peer.room = room
        peer.name = name or peer_id
        peer.capabilities = caps
        if room not in svc.rooms:
            svc.room_creator[room] = peer.identity.key
            svc.rooms_created[peer.identity.key] += 1
        svc.rooms.setdefault(room, {})[peer_id] = sid
        await self.enter_room(sid, room)
        if announce:
            record = {**peer.public(), "resumed": resumed}
            await self.emit("peer_joined", record, room=room, skip_sid=sid)
        log.info(
            "%s %s %s as %s (%s)", sid, "resumed in" if resumed else "joined", room, peer_id, name
        )
        return {
            "ok": True,
            "protocol": PROTOCOL_VERSION,
            "room": room,
            "peer_id": peer_id,
            "name": peer.name,
            "peers": others,
            "resume_secret": svc.resume_secret(room, peer_id, peer.identity),
            "resumed": resumed,
            "relay": svc.limits.allow_relay,
            "ice_servers": [svc.turn.credentials(peer_id)] if svc.turn is not None else [],
        }

    async def _resume(
        self, sid: str, peer: PeerRecord, room: str, name: str, caps: dict[str, Any], resume: Any
    ) -> dict[str, Any]:
        """Rejoin under the same peer id, so the room sees no leave and no newcomer.

        Three things must hold: the secret is the one this server gave for
        (room, peer id, *this identity*), so another credential holder cannot
        use a leaked or guessed one; the id is not held by a connection that is
        still alive (it is asked, see :meth:`_still_alive`); and an away slot is
        only taken back in the room it was kept in.
        """
        svc = self.service
        if not isinstance(resume, dict):
            raise RequestRejected("invalid", "'resume' must be an object {peer_id, secret}")
        peer_id, secret = resume.get("peer_id"), resume.get("secret")
        if not isinstance(peer_id, str) or not PEER_ID_RE.match(peer_id):
            raise RequestRejected("invalid", "'resume.peer_id' must be 16 hex digits")
        expected = svc.resume_secret(room, peer_id, peer.identity)
        if not isinstance(secret, str) or not hmac.compare_digest(
            secret.encode(), expected.encode()
        ):
            raise RequestRejected("invalid_resume", "resume refused: join without 'resume'")
        old_sid = svc.live_sid(peer_id)
        if old_sid is not None:
            old = svc.peers[old_sid]
            if old.identity != peer.identity:  # cannot pass the secret; kept as a second lock
                raise RequestRejected("invalid_resume", "resume refused: join without 'resume'")
            if await self._still_alive(old_sid, peer_id):
                raise RequestRejected(
                    "peer_in_use",
                    f"peer {peer_id} is still connected; a resume never replaces a live "
                    "connection (it was told of this attempt)",
                )
            # Silent for ``probe_timeout`` seconds: a connection that died without
            # a close (the client already came back on a new one). Hang it up.
            if svc.live_sid(peer_id) == old_sid:
                if old.room == room:
                    old.room = old.peer_id = None
                    with contextlib.suppress(ValueError, KeyError):
                        await self.leave_room(old_sid, room)
                else:
                    await svc.remove(old_sid, "disconnected")
                await svc.sio.disconnect(old_sid)
                log.info("%s: connection %s did not answer; replaced by %s", peer_id, old_sid, sid)
        members = svc.rooms.get(room, {})
        slot = svc.away.get(peer_id)
        if slot is not None and (slot.record.room != room or slot.record.identity != peer.identity):
            # A slot is only taken back where it was kept; popping it here
            # would leave a ghost member in its room for ever.
            raise RequestRejected("invalid_resume", "resume refused: join without 'resume'")
        if slot is not None:
            # came back within the grace period: nobody saw it go
            await self._check_name_free(room, name, peer_id, peer.identity)
            svc.away.pop(peer_id, None)
            if slot.expiry is not None:
                slot.expiry.cancel()
            away = slot.record
            reply = await self._enter(sid, peer, room, peer_id, name, caps, announce=False)
            if (away.name, away.capabilities) != (peer.name, peer.capabilities):
                await self.emit("peer_updated", peer.public(), room=room, skip_sid=sid)
            return {**reply, "resumed": True}
        if peer_id in members:
            # its dead connection was just hung up: take its place unseen
            await self._check_name_free(room, name, peer_id, peer.identity)
            reply = await self._enter(sid, peer, room, peer_id, name, caps, announce=False)
            return {**reply, "resumed": True}
        # unknown here (the server restarted): a new slot under the old id
        self._check_room_capacity(peer, room)
        await self._check_name_free(room, name, peer_id, peer.identity)
        return await self._enter(sid, peer, room, peer_id, name, caps, resumed=True)

    async def _still_alive(self, old_sid: str, peer_id: str, *, notify: bool = True) -> bool:
        """Ask the connection that holds ``peer_id`` whether it is there.

        Any Socket.IO client acknowledges an event it has no handler for, so
        every client answers ``probe`` without knowing about it. The answer
        is awaited for ``resume_probe_timeout`` at most: a connection that
        closes meanwhile (often the probe's own write shows it dead) ends
        the wait at once. With ``notify``, one that answers also hears
        ``resume_attempt``: someone holding its secret and its credentials
        tried to take its id.
        """
        svc = self.service
        timeout = svc.limits.resume_probe_timeout
        # emit + callback, not call(): python-socketio forbids call() without
        # async handlers (a handler waiting on its own client's ack would hang;
        # this one waits on another connection's).
        answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def ack(*args: Any) -> None:
            if not answered.done():
                answered.set_result(True)

        if old_sid not in svc.peers:
            return False
        svc.hangups.setdefault(old_sid, set()).add(answered)
        try:
            await svc.sio.emit("probe", {"peer_id": peer_id}, to=old_sid, callback=ack)
            if not await asyncio.wait_for(answered, timeout):
                return False  # it closed
        except (TimeoutError, socketio.exceptions.SocketIOError):
            return False
        finally:
            waiting = svc.hangups.get(old_sid)
            if waiting is not None:
                waiting.discard(answered)
                if not waiting:
                    del svc.hangups[old_sid]
        if not notify:
            return True
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.emit(
                "resume_attempt", {"peer_id": peer_id, "outcome": "refused"}, to=old_sid
            )
        log.warning("refused a resume of %s: its connection %s is alive", peer_id, old_sid)
        return True

    async def on_update(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """New capabilities: stored for late joiners and sent to the room."""
        peer = self.service.peers[sid]
        if peer.room is None:
            raise RequestRejected("not_joined", "join a room first")
        peer.capabilities = self._capabilities(data)
        await self.emit("peer_updated", peer.public(), room=peer.room, skip_sid=sid)
        return {"ok": True}

    async def on_relay(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """One data-channel frame for a peer that cannot be reached directly."""
        svc = self.service
        limits = svc.limits
        peer = svc.peers[sid]
        if not limits.allow_relay:
            raise RequestRejected("relay_disabled", "this server does not relay data")
        if peer.room is None:
            raise RequestRejected("not_joined", "join a room before relaying")
        target = _need_str(data, "to", 64)
        frame = data.get("data")
        if isinstance(frame, str):
            size = len(frame.encode())
        elif isinstance(frame, bytes):
            size = len(frame)
        else:
            raise RequestRejected("invalid", "'data' must be a string or bytes")
        if size > limits.max_relay_bytes:
            raise RequestRejected(
                "too_large", f"relayed frame of {size} bytes; the limit is {limits.max_relay_bytes}"
            )
        if len(data) > 2:
            raise RequestRejected("invalid", "'relay' takes only 'to' and 'data'")
        target_sid = svc.rooms.get(peer.room, {}).get(target)
        if target_sid is None:
            raise RequestRejected("unknown_peer", f"no peer {target!r} reachable in {peer.room!r}")
        await self.emit("relay", {"from": peer.peer_id, "data": frame}, to=target_sid)
        return {"ok": True}

    async def on_invite(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """A member asks for an invite to its room (invitees may not invite others)."""
        svc = self.service
        peer = svc.peers[sid]
        if peer.room is None:
            raise RequestRejected("not_joined", "join a room before inviting to it")
        if peer.identity.kind == "invite":
            raise RequestRejected("forbidden", "a member who came by invite cannot invite others")
        ttl = data.get("ttl", DEFAULT_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise RequestRejected("invalid", "'ttl' must be a number of seconds")
        try:
            token, claim = svc.invites.mint(peer.room, peer.identity, float(ttl))
        except ValueError as exc:
            raise RequestRejected("invalid", str(exc)) from exc
        except AuthRefused as exc:
            raise RequestRejected("forbidden", str(exc)) from exc
        log.info("invite %s to room %r made by %s", claim.id, claim.room, peer.peer_id)
        reply: dict[str, Any] = {
            "ok": True,
            "token": token,
            "room": claim.room,
            "id": claim.id,
            "expires": claim.expires,
        }
        if svc.public_url:
            reply["server_url"] = svc.public_url
        return reply

    async def on_revoke_invite(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Its issuer revokes an invite: nobody joins with it any more, and the
        sessions that came with it end before this replies (their rooms hear
        ``peer_left`` with reason ``revoked`` first, the guests ``session_ended``,
        and their transports close)."""
        svc = self.service
        peer = svc.peers[sid]
        try:
            claim = svc.invites.revoke(data.get("token"), peer.identity)
        except AuthRefused as exc:
            raise RequestRejected("forbidden", str(exc)) from exc

        def came_with_it(identity: Identity) -> bool:
            return identity.kind == "invite" and identity.subject == claim.id

        guests = [s for s, p in svc.peers.items() if came_with_it(p.identity)]
        away = [p for p, slot in svc.away.items() if came_with_it(slot.record.identity)]
        # the peer ids they had (away ones too), so the revoker can re-key the room without them
        peer_ids = [pid for pid in (svc.peers[g].peer_id for g in guests) if pid is not None]
        peer_ids += away
        for guest in guests:
            await end_session(svc, guest, "revoked")
        for peer_id in [p for p, slot in svc.away.items() if came_with_it(slot.record.identity)]:
            announced = svc.expire(peer_id, "revoked")  # away: its slot goes now
            if announced is not None:
                await announced
        log.info("invite %s revoked; %d connection(s) closed", claim.id, len(guests))
        return {"ok": True, "id": claim.id, "closed": len(guests), "peers": peer_ids}

    async def on_leave(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        if self.service.peers[sid].room is None:
            raise RequestRejected("not_joined", "not in a room")
        await self.service.remove(sid, "left")
        return {"ok": True}

    async def on_signal(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        svc = self.service
        limits = svc.limits
        peer = svc.peers[sid]
        if peer.room is None:
            raise RequestRejected("not_joined", "join a room before sending signals")
        target = _need_str(data, "to", 64)
        kind = data.get("type")
        if kind not in SIGNAL_TYPES:
            raise RequestRejected(
                "invalid", "'type' must be one of " + ", ".join(sorted(SIGNAL_TYPES))
            )
        out: dict[str, Any] = {"from": peer.peer_id, "type": kind}
        if kind in ("offer", "answer"):
            sdp = _need_str(data, "sdp", limits.max_sdp_bytes)
            out["sdp"] = sdp
            for key, longest in DESCRIPTION_FIELDS.items():
                if key in data:
                    out[key] = _need_str(data, key, longest)
            if "keep" in data:
                if not isinstance(data["keep"], bool):
                    raise RequestRejected("invalid", "'keep' must be a boolean")
                out["keep"] = data["keep"]
        elif kind in ("relay", "relay-accept"):
            for key, longest in RELAY_FIELDS.items():
                if key == "via" and kind == "relay-accept":
                    continue
                value = data.get(key)
                if key == "auth" and value is None:
                    continue
                if not isinstance(value, str) or len(value) > longest:
                    raise RequestRejected(
                        "invalid", f"'{key}' must be a string of at most {longest} characters"
                    )
                out[key] = value
        elif kind in ("refuse", "invite"):
            reason = data.get("reason", "")
            if not isinstance(reason, str) or len(reason) > 64:
                raise RequestRejected("invalid", "'reason' must be a string of at most 64")
            out["reason"] = reason
        else:
            cand = data.get("candidate")
            if cand is not None and not isinstance(cand, dict | str):
                raise RequestRejected("invalid", "'candidate' must be an object, string or null")
            _bounded_json(cand, limits.max_candidate_bytes, "candidate")
            out["candidate"] = cand
        members = svc.rooms.get(peer.room, {})
        target_sid = members.get(target)
        if target_sid is None:
            what = "is reconnecting" if target in members else f"is not in room {peer.room!r}"
            raise RequestRejected("unknown_peer", f"peer {target!r} {what}")
        await self.emit("signal", out, to=target_sid)
        return {"ok": True}


class SignalingService:
    """One signaling service: its Socket.IO server, rosters and limits."""

    def __init__(
        self,
        *,
        async_mode: str,
        authenticate: Authenticate,
        limits: ServerLimits | None = None,
        client_manager: socketio.AsyncManager | None = None,
        cors_allowed_origins: list[str] | str | None = None,
        resume_key: bytes | None = None,
        turn: TurnServer | None = None,
        invites: InviteBook | None = None,
        public_url: str | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self.public_url = check_server_url(public_url) if public_url else None
        """The base URL others reach this service at (behind a proxy or tunnel):
        what invites name. None: clients use the URL they connected to."""
        self.turn = turn
        """Every joining peer gets credentials for it (``ice_servers`` in the reply)."""
        self.authenticate = authenticate
        self.resume_key = resume_key or secrets.token_bytes(32)
        """Signs resume secrets: random unless the operator keeps one (a key file)
        so that peers keep their ids across a restart. Never derived from a token
        clients hold: they could compute every peer's secret."""
        self.invites = invites or InviteBook(invite_key(self.resume_key))
        """Mints and checks invite tokens; its key follows the resume key, so
        invites outlive a restart exactly when resumes do."""
        self.peers: dict[str, PeerRecord] = {}
        self.rooms: dict[str, dict[str, str | None]] = {}
        """room → {peer_id: sid}; the sid is None while the peer is away (grace period)."""
        self.connections: Counter[str] = Counter()
        """identity key → open connections (``max_connections_per_identity``)."""
        self.room_creator: dict[str, str] = {}
        """room → identity key of whoever created it."""
        self.rooms_created: Counter[str] = Counter()
        """identity key → rooms it created that still exist (``max_rooms_per_identity``)."""
        self.away: dict[str, AwaySlot] = {}
        self.sio = socketio.AsyncServer(
            async_mode=async_mode,
            client_manager=client_manager,
            transports=["websocket"],
            max_http_buffer_size=self.limits.max_frame_bytes,
            # Offers and candidates must reach the peer in the order they were
            # sent: handle each connection's events one at a time.
            async_handlers=False,
            cors_allowed_origins=cors_allowed_origins,
            logger=False,
            engineio_logger=False,
        )
        self.sio.register_namespace(SignalingNamespace(self))
        self._pending: set[asyncio.Future[Any]] = set()
        self.sessions = SessionEnds(self, self.invites.now)
        """Ends sessions whose invite expires or is revoked (timers and request checks)."""
        self.hangups: dict[str, set[asyncio.Future[bool]]] = {}
        """sid → probes waiting for its answer (:meth:`SignalingNamespace._still_alive`):
        settled False when it disconnects."""
        self.closing = False
        """Shutting down (:meth:`shutdown`): connections that close keep no
        slot and nobody is told of them."""

    def resume_secret(self, room: str, peer_id: str, identity: Identity) -> str:
        """The secret that lets ``identity`` (and no one else) take ``peer_id`` back in ``room``."""
        msg = f"p2p-nb resume v2\n{room}\n{peer_id}\n{identity.key}".encode()
        return hmac.new(self.resume_key, msg, hashlib.sha256).hexdigest()[:32]

    def live_sid(self, peer_id: str) -> str | None:
        """The open connection that holds ``peer_id`` in some room, if any."""
        for sid, peer in self.peers.items():
            if peer.peer_id == peer_id:
                return sid
        return None

    def _drop_room_if_empty(self, room: str) -> None:
        if self.rooms.get(room, None) == {}:
            del self.rooms[room]
            creator = self.room_creator.pop(room, None)
            if creator is not None:
                self.rooms_created[creator] -= 1
                if self.rooms_created[creator] <= 0:
                    del self.rooms_created[creator]

    def member(self, room: str, peer_id: str) -> dict[str, Any]:
        sid = self.rooms.get(room, {}).get(peer_id)
        if sid is not None and sid in self.peers:
            return self.peers[sid].public()
        slot = self.away.get(peer_id)
        if slot is not None:
            # in its grace period: a newcomer shows it as away, not as a link in error
            return {**slot.record.public(), "away": True}
        return {"peer_id": peer_id, "name": peer_id, "capabilities": {}}

    async def step_away(self, sid: str) -> None:
        """A joined connection dropped: keep its slot for ``resume_grace`` seconds."""
        peer = self.peers.get(sid)
        grace = self.limits.resume_grace
        if (
            peer is None
            or peer.room is None
            or peer.peer_id is None
            or grace <= 0
            or not peer.resumable
            or self.closing
        ):
            await self.remove(sid, "disconnected")
            return
        room, peer_id = peer.room, peer.peer_id
        self.rooms[room][peer_id] = None
        record = PeerRecord(
            sid="",
            identity=peer.identity,
            remote_ip=peer.remote_ip,
            peer_id=peer_id,
            room=room,
            name=peer.name,
            capabilities=peer.capabilities,
        )
        slot = AwaySlot(record)
        self.away[peer_id] = slot
        peer.room = peer.peer_id = None
        with contextlib.suppress(ValueError, KeyError):
            await self.sio.leave_room(sid, room)
        loop = asyncio.get_running_loop()
        slot.expiry = loop.call_later(grace, self.expire, peer_id)
        log.info("%s away from %s; slot kept %gs", peer_id, room, grace)

    def expire(self, peer_id: str, reason: str = "disconnected") -> asyncio.Future[Any] | None:
        """An away slot's time is up (or its owner joined afresh, or its invite
        was revoked): the room hears it left, for ``reason``.

        Returns the task announcing ``peer_left``, for a caller that must have
        it sent before what it sends next.
        """
        slot = self.away.pop(peer_id, None)
        if slot is None or slot.record.room is None:
            return None
        if slot.expiry is not None:
            slot.expiry.cancel()
        room = slot.record.room
        members = self.rooms.get(room, {})
        if members.get(peer_id, "") is not None:
            return None  # someone resumed it meanwhile
        members.pop(peer_id, None)
        self._drop_room_if_empty(room)
        task: asyncio.Future[Any] = asyncio.ensure_future(
            self.sio.emit("peer_left", {"peer_id": peer_id, "reason": reason}, room=room)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        log.info("%s left %s (did not come back)", peer_id, room)
        return task

    def close(self) -> None:
        """Forget away slots and stop the session timers (on shutdown)."""
        self.sessions.close()
        self.invites.close()
        for slot in self.away.values():
            if slot.expiry is not None:
                slot.expiry.cancel()
        self.away.clear()

    async def shutdown(self, reason: str = "the signaling server is shutting down") -> int:
        """Stop serving at once: every client hears ``server_shutdown``, then its
        transport is closed (an engine.io close, not a namespace disconnect,
        so Socket.IO clients reconnect by themselves, to whatever listens next).

        Without it a web server's shutdown waits for each WebSocket to end on
        its own (engine.io pings: ~45 s) while the old process goes on serving
        its members and a restarted one already has the port: the room splits.
        Nobody hears ``peer_left`` meanwhile: everyone leaves at once, and a
        restarted server is told again who is in which room. Returns the
        number of connections closed."""
        self.closing = True
        count = len(self.sio.eio.sockets)
        if count:
            for sid in list(self.peers):  # ours only (a shared client manager has others)
                with contextlib.suppress(socketio.exceptions.SocketIOError):
                    await self.sio.emit("server_shutdown", {"reason": reason}, to=sid)
            eio = self.sio.eio
            # Not eio.disconnect(): it waits for each socket's send queue to
            # drain, for ever for one whose transport is already gone (a
            # refused client). The close packet is queued; the web server's
            # shutdown then waits (bounded) for the transports to end.
            for sock in list(eio.sockets.values()):
                with contextlib.suppress(Exception):
                    await sock.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
                    # None ends the socket's writer once the close packet is
                    # out: it closes the WebSocket (browsers ignore the packet)
                    sock.queue.put_nowait(None)
            eio.sockets = {}
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.sio.shutdown()
        log.info("shut down: %d connection(s) closed", count)
        return count

    async def remove(self, sid: str, reason: str) -> None:
        """Take a connection out of its room and tell the others."""
        peer = self.peers.get(sid)
        if peer is None or peer.room is None or peer.peer_id is None:
            return
        room, peer_id = peer.room, peer.peer_id
        members = self.rooms.get(room, {})
        members.pop(peer_id, None)
        self._drop_room_if_empty(room)
        peer.room = None
        peer.peer_id = None
        await self.sio.leave_room(sid, room)
        if self.closing:
            return  # everyone is being disconnected: nobody to tell
        await self.sio.emit("peer_left", {"peer_id": peer_id, "reason": reason}, room=room)
        log.info("%s left %s (%s)", peer_id, room, reason)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "rooms": len(self.rooms),
            "peers": sum(len(m) for m in self.rooms.values()),
            "away": len(self.away),
        }
