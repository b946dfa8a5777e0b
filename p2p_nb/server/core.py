"""The signaling service: rooms, presence and targeted relay over Socket.IO.

Framework-neutral: :class:`SignalingService` builds a python-socketio
``AsyncServer`` for a given ``async_mode``; the standalone runner attaches it to
aiohttp, the Jupyter extension to Tornado. It never sees chat or file data:
peers exchange only what WebRTC needs to find each other.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from .._version import __version__
from .limits import ROOM_NAME_RE, ServerLimits

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SIGNAL_TYPES = frozenset({"offer", "answer", "candidate"})

Authenticate = Callable[[dict[str, Any], Any], Awaitable[str]]
"""Auth hook: given the WSGI-style environ and the Socket.IO ``auth`` payload,
return the user's identity or raise :class:`AuthRefused`."""


class AuthRefused(Exception):
    """Raised by an auth hook to refuse a connection."""


class RequestRejected(Exception):
    """A client event that breaks the protocol or a limit; becomes an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PeerRecord:
    sid: str
    user: str
    remote_ip: str
    peer_id: str | None = None
    room: str | None = None
    name: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    tokens: float = 0.0
    last_refill: float = field(default_factory=time.monotonic)

    def public(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "name": self.name, "capabilities": self.capabilities}


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
            self._spend_token(peer)
            handler = getattr(self, f"on_{event}", None)
            if handler is None or event.startswith("_"):
                raise RequestRejected("unknown_event", f"unknown event {event!r}")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise RequestRejected("invalid", f"'{event}' expects a JSON object")
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
        try:
            user = await self.service.authenticate(environ, auth)
        except AuthRefused as exc:
            log.info("refused connection %s: %s", sid, exc)
            raise socketio.exceptions.ConnectionRefusedError(f"unauthorized: {exc}") from exc
        handler = environ.get("tornado.handler")
        remote_ip = (
            handler.request.remote_ip
            if handler is not None
            else str(environ.get("REMOTE_ADDR", ""))
        )
        self.service.peers[sid] = PeerRecord(
            sid=sid,
            user=user,
            remote_ip=remote_ip,
            tokens=float(self.service.limits.rate_burst),
        )

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        await self.service.remove(sid, "disconnected")
        self.service.peers.pop(sid, None)

    async def on_join(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        svc = self.service
        limits = svc.limits
        peer = svc.peers[sid]
        if peer.room is not None:
            raise RequestRejected("already_joined", f"already in room {peer.room!r}; leave first")
        room = _need_str(data, "room", 64)
        if not ROOM_NAME_RE.match(room):
            raise RequestRejected(
                "invalid_room",
                "room names are 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
        name = data.get("name", "")
        if not isinstance(name, str) or len(name) > limits.max_name_length:
            raise RequestRejected(
                "invalid", f"'name' must be a string of at most {limits.max_name_length} characters"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RequestRejected("invalid", "'name' must not contain control characters")
        caps = data.get("capabilities", {})
        if not isinstance(caps, dict):
            raise RequestRejected("invalid", "'capabilities' must be an object")
        _bounded_json(caps, limits.max_capabilities_bytes, "capabilities")
        members = svc.rooms.get(room)
        if members is None and len(svc.rooms) >= limits.max_rooms:
            raise RequestRejected("server_full", f"the server already has {limits.max_rooms} rooms")
        if members is not None and len(members) >= limits.max_peers_per_room:
            raise RequestRejected(
                "room_full", f"room {room!r} already has {limits.max_peers_per_room} peers"
            )
        peer.peer_id = secrets.token_hex(8)
        peer.room = room
        peer.name = name or peer.peer_id
        peer.capabilities = caps
        others = [svc.peers[s].public() for s in (members or {}).values()]
        svc.rooms.setdefault(room, {})[peer.peer_id] = sid
        await self.enter_room(sid, room)
        await self.emit("peer_joined", peer.public(), room=room, skip_sid=sid)
        log.info("%s joined %s as %s (%s)", sid, room, peer.peer_id, peer.name)
        return {
            "ok": True,
            "protocol": PROTOCOL_VERSION,
            "room": room,
            "peer_id": peer.peer_id,
            "name": peer.name,
            "peers": others,
        }

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
            raise RequestRejected("invalid", "'type' must be one of offer, answer, candidate")
        out: dict[str, Any] = {"from": peer.peer_id, "type": kind}
        if kind in ("offer", "answer"):
            sdp = _need_str(data, "sdp", limits.max_sdp_bytes)
            out["sdp"] = sdp
        else:
            cand = data.get("candidate")
            if cand is not None and not isinstance(cand, dict | str):
                raise RequestRejected("invalid", "'candidate' must be an object, string or null")
            _bounded_json(cand, limits.max_candidate_bytes, "candidate")
            out["candidate"] = cand
        target_sid = svc.rooms.get(peer.room, {}).get(target)
        if target_sid is None:
            raise RequestRejected("unknown_peer", f"no peer {target!r} in room {peer.room!r}")
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
    ) -> None:
        self.limits = limits or ServerLimits()
        self.authenticate = authenticate
        self.peers: dict[str, PeerRecord] = {}
        self.rooms: dict[str, dict[str, str]] = {}
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

    async def remove(self, sid: str, reason: str) -> None:
        """Take a connection out of its room and tell the others."""
        peer = self.peers.get(sid)
        if peer is None or peer.room is None or peer.peer_id is None:
            return
        room, peer_id = peer.room, peer.peer_id
        members = self.rooms.get(room, {})
        members.pop(peer_id, None)
        if not members:
            self.rooms.pop(room, None)
        peer.room = None
        peer.peer_id = None
        await self.sio.leave_room(sid, room)
        await self.sio.emit("peer_left", {"peer_id": peer_id, "reason": reason}, room=room)
        log.info("%s left %s (%s)", peer_id, room, reason)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "rooms": len(self.rooms),
            "peers": sum(len(m) for m in self.rooms.values()),
        }
