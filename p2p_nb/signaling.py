"""Signaling client: the only part of a peer that talks to a server.

It joins a room, learns who is there and relays WebRTC offers, answers and
candidates to one peer at a time. Chat and files never pass through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import socketio

from .errors import AuthError, P2PTimeoutError, SignalingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemotePeer:
    """A peer as the signaling server introduced it."""

    peer_id: str
    name: str
    capabilities: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Any) -> RemotePeer:
        if not isinstance(data, dict) or not isinstance(data.get("peer_id"), str):
            raise SignalingError(f"malformed peer record from server: {data!r}", "bad_reply")
        caps = data.get("capabilities")
        return cls(
            peer_id=data["peer_id"],
            name=str(data.get("name") or data["peer_id"]),
            capabilities=caps if isinstance(caps, dict) else {},
        )


@dataclass(frozen=True)
class JoinResult:
    room: str
    peer_id: str
    name: str
    peers: list[RemotePeer]


def normalise_base_url(url: str) -> str:
    """Accept ``host:port``, with or without a trailing slash; return ``http(s)://.../``."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise SignalingError(f"unsupported URL scheme in {url!r}", "bad_url")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class SignalingClient:
    """One Socket.IO connection to a p2p-nb signaling endpoint.

    Incoming ``peer_joined``/``peer_left``/``signal`` events are handed to the
    callbacks synchronously, in arrival order, so the mesh sees offers and
    candidates in the order they were sent.
    """

    def __init__(
        self,
        *,
        on_peer_joined: Callable[[RemotePeer], None],
        on_peer_left: Callable[[str, str], None],
        on_signal: Callable[[str, dict[str, Any]], None],
        on_disconnected: Callable[[], None],
    ) -> None:
        self._sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self._on_peer_joined = on_peer_joined
        self._on_peer_left = on_peer_left
        self._on_signal = on_signal
        self._on_disconnected = on_disconnected
        self._closing = False
        self._refusal: str | None = None
        self.base_url = ""
        self._register()

    def _register(self) -> None:
        sio = self._sio

        @sio.on("peer_joined")  # type: ignore[untyped-decorator]
        def _joined(data: Any) -> None:
            try:
                self._on_peer_joined(RemotePeer.from_wire(data))
            except SignalingError as exc:
                log.warning("%s", exc)

        @sio.on("peer_left")  # type: ignore[untyped-decorator]
        def _left(data: Any) -> None:
            if isinstance(data, dict) and isinstance(data.get("peer_id"), str):
                self._on_peer_left(data["peer_id"], str(data.get("reason", "left")))

        @sio.on("signal")  # type: ignore[untyped-decorator]
        def _signal(data: Any) -> None:
            if isinstance(data, dict) and isinstance(data.get("from"), str):
                self._on_signal(data["from"], data)
            else:
                log.warning("ignoring malformed signal from server: %r", data)

        @sio.on("error")  # type: ignore[untyped-decorator]
        def _error(data: Any) -> None:
            log.debug("signaling server reported: %r", data)

        @sio.event  # type: ignore[untyped-decorator]
        def connect_error(data: Any) -> None:
            message = data.get("message") if isinstance(data, dict) else data
            self._refusal = str(message)

        @sio.event  # type: ignore[untyped-decorator]
        def disconnect(reason: Any = None) -> None:
            if not self._closing:
                log.warning("signaling connection lost (%s)", reason)
                self._on_disconnected()

    async def connect(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        """Connect, turning the library's vague failures into precise errors."""
        base = normalise_base_url(url)
        self.base_url = base
        path = urlsplit(base).path.lstrip("/") + "p2p/socket.io"
        headers = {"Authorization": f"token {token}"} if token else {}
        auth = {"token": token} if token else None
        try:
            await self._sio.connect(
                base,
                headers=headers,
                auth=auth,
                transports=["websocket"],
                socketio_path=path,
                wait_timeout=timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self._release()
            raise await self._diagnose(base, token, exc) from exc

    async def _release(self) -> None:
        """A failed connect leaves engine.io's HTTP session open; close it."""
        http = getattr(self._sio.eio, "http", None)
        if http is not None and not http.closed and not self._sio.eio.external_http:
            await http.close()

    async def _diagnose(self, base: str, token: str | None, exc: Exception) -> SignalingError:
        """Ask the health endpoint why the connection failed."""
        refusal = self._refusal or ""
        if refusal.startswith("unauthorized"):
            return AuthError(
                f"the signaling server at {base} refused the connection ({refusal}); "
                "pass the token printed by p2p-nb-signal with token=..."
            )
        headers = {"Authorization": f"token {token}"} if token else {}
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(base + "p2p/health", headers=headers) as resp,
            ):
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as http_exc:
            return SignalingError(
                f"cannot reach the signaling server at {base}: {http_exc}", "unreachable"
            )
        if status in (401, 403):
            what = "a wrong token" if token else "no token"
            return AuthError(
                f"the signaling server at {base} refused {what} (HTTP {status}); "
                "pass the Jupyter or p2p-nb-signal token with token=..."
            )
        if status == 404:
            return SignalingError(
                f"no p2p-nb signaling endpoint at {base}p2p/ (HTTP 404): is the p2p_nb "
                "Jupyter server extension enabled, or is this the right URL?",
                "not_found",
            )
        return SignalingError(f"could not connect to {base}: {exc}", "connect_failed")

    async def _call(self, event: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            reply = await self._sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError as exc:
            raise P2PTimeoutError(
                f"signaling server did not answer {event!r} in {timeout}s"
            ) from exc
        except socketio.exceptions.BadNamespaceError as exc:
            raise SignalingError("not connected to the signaling server", "disconnected") from exc
        if not isinstance(reply, dict):
            raise SignalingError(f"unexpected reply to {event!r}: {reply!r}", "bad_reply")
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise SignalingError(
                f"{event} refused: {err.get('message', 'no reason given')}",
                str(err.get("code", "refused")),
            )
        return reply

    async def join(
        self, room: str, name: str, capabilities: dict[str, Any], *, timeout: float = 10.0
    ) -> JoinResult:
        reply = await self._call(
            "join", {"room": room, "name": name, "capabilities": capabilities}, timeout
        )
        peers = reply.get("peers")
        if not isinstance(reply.get("peer_id"), str) or not isinstance(peers, list):
            raise SignalingError(f"malformed join reply: {reply!r}", "bad_reply")
        return JoinResult(
            room=str(reply.get("room", room)),
            peer_id=reply["peer_id"],
            name=str(reply.get("name", name)),
            peers=[RemotePeer.from_wire(p) for p in peers],
        )

    async def signal(self, to: str, payload: dict[str, Any], *, timeout: float = 10.0) -> None:
        await self._call("signal", {"to": to, **payload}, timeout)

    async def leave(self, *, timeout: float = 5.0) -> None:
        await self._call("leave", {}, timeout)

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected)

    async def close(self) -> None:
        self._closing = True
        if self._sio.connected:
            await self._sio.disconnect()
        await self._release()
