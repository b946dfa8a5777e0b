"""Signaling client: the only part of a peer that talks to a server.

It joins a room, learns who is there and relays WebRTC offers, answers and
candidates to one peer at a time. Chat and files pass through here only for a
pair of peers that cannot connect directly (the ``relay`` event).

A lost connection is re-established on its own (backoff with jitter, without
end) and the room is re-joined under the same peer id with the resume secret
the server gave at the first join, so the room sees no one leave or arrive.
A rejoin the server refuses or does not answer (room full for now, rate
limited, timed out, the connection dropped again) is tried again with the same
backoff until it works or the room is left: one reconnect loop at a time.
A session the server ends for good (``session_ended``: the invite was revoked
or expired) is not: the reason is reported as an :class:`AuthError`, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import socketio

from .backoff import Backoff
from .errors import (
    AuthError,
    NameRefused,
    P2PError,
    P2PTimeoutError,
    ResumeRefused,
    SignalingError,
)
from .invite import INVITE_PREFIX
from .tasks import TaskSet

log = logging.getLogger(__name__)

REFUSALS: dict[str, type[SignalingError]] = {
    "invalid_name": NameRefused,
    "name_taken": NameRefused,
    "invalid_resume": ResumeRefused,
    "peer_in_use": ResumeRefused,
    "forbidden_room": AuthError,
    "forbidden": AuthError,
    "invite_revoked": AuthError,
    "invite_expired": AuthError,
}
"""Server error codes that get their own exception class (the rest: SignalingError)."""
SESSION_ENDED = {
    "revoked": "your invite was revoked by the member who made it",
    "expired": "your invite expired",
}
"""``session_ended`` reasons and what we tell the user (docs/protocol.md, section 7)."""


def _kind(value: Any) -> str:
    """How an error text names a bad value: its type, never its content.

    Replies from the server carry secrets (``resume_secret``, TURN credentials)
    and text chosen by other peers; neither belongs in an exception message.
    """
    return type(value).__name__


@dataclass(frozen=True)
class RemotePeer:
    """A peer as the signaling server introduced it."""

    peer_id: str
    name: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    """Announced again after a server restart (a peer we may already know)."""

    @classmethod
    def from_wire(cls, data: Any) -> RemotePeer:
        if not isinstance(data, dict) or not isinstance(data.get("peer_id"), str):
            what = "no string 'peer_id'" if isinstance(data, dict) else f"a {_kind(data)}"
            raise SignalingError(f"malformed peer record from server: {what}", "bad_reply")
        caps = data.get("capabilities")
        return cls(
            peer_id=data["peer_id"],
            name=str(data.get("name") or data["peer_id"]),
            capabilities=caps if isinstance(caps, dict) else {},
            resumed=data.get("resumed") is True,
        )


@dataclass(frozen=True)
class JoinResult:
    room: str
    peer_id: str
    name: str
    peers: list[RemotePeer]
    resume_secret: str | None = None
    resumed: bool = False
    relay: bool = False
    """The server relays data for pairs that cannot connect directly."""
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    """STUN/TURN servers the signaling server hands out (TURN with credentials)."""


@dataclass(frozen=True)
class ReconnectSettings(Backoff):
    """How the client gets back to the signaling server after losing it."""

    max_delay: float = 5.0


def _ice_servers(value: Any) -> list[dict[str, Any]]:
    """The join reply's ``ice_servers``, checked (a bad one is the server's bug)."""
    if not isinstance(value, list):
        raise SignalingError(
            f"malformed join reply: 'ice_servers' is a {_kind(value)}, not a list", "bad_reply"
        )
    servers = []
    for index, item in enumerate(value):
        urls = item.get("urls") if isinstance(item, dict) else None
        if isinstance(urls, str):
            urls = [urls]
        ok = (
            isinstance(urls, list)
            and urls
            and all(isinstance(u, str) and u.startswith(("stun:", "turn:", "turns:")) for u in urls)
            and all(isinstance(item.get(k, ""), str) for k in ("username", "credential"))
        )
        if not ok:
            raise SignalingError(
                f"malformed join reply: ice server #{index} needs 'urls' (stun:/turn:/turns:) "
                "and string 'username'/'credential'",
                "bad_reply",
            )
        servers.append({k: item[k] for k in ("urls", "username", "credential") if k in item})
    return servers


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


def is_invite_token(token: object) -> bool:
    return isinstance(token, str) and token.startswith(INVITE_PREFIX)


async def check_invite(base: str, token: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the server (``GET p2p/invite``) whether it takes this invite; an
    :class:`AuthError` with its reason if not (expired, revoked, altered...)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(base + "p2p/invite", headers={"Authorization": f"token {token}"}) as resp,
        ):
            status = resp.status
            body = await resp.json(content_type=None) if status in (200, 403) else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SignalingError(
            f"cannot reach the signaling server at {base}: {exc}", "unreachable"
        ) from exc
    if status == 200 and isinstance(body, dict) and body.get("ok") is True:
        return body
    if status == 404:
        raise SignalingError(
            f"no p2p-nb invite endpoint at {base}p2p/invite (HTTP 404): an older server?",
            "not_found",
        )
    reason = body.get("reason") if isinstance(body, dict) else None
    raise AuthError(
        f"the signaling server at {base} refused the invite: "
        f"{reason if isinstance(reason, str) else f'HTTP {status}'}"
    )


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
        on_peer_updated: Callable[[RemotePeer], None] | None = None,
        on_relay: Callable[[str, str | bytes], None] | None = None,
        on_rejoined: Callable[[JoinResult | None, Exception | None], None] | None = None,
        reconnect: ReconnectSettings | None = None,
    ) -> None:
        # Our own reconnection (not python-socketio's): after it we must re-join
        # with the resume secret before anything else is sent.
        self._sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self._on_peer_joined = on_peer_joined
        self._on_peer_left = on_peer_left
        self._on_signal = on_signal
        self._on_disconnected = on_disconnected
        self._on_peer_updated = on_peer_updated
        self._on_relay = on_relay
        self._on_rejoined = on_rejoined
        self.reconnect_settings = reconnect or ReconnectSettings()
        self._tasks = TaskSet("signaling")
        self._target: tuple[str, str | None, float] | None = None
        self._membership: tuple[str, str, dict[str, Any]] | None = None
        self._resume: dict[str, str] | None = None
        self.reconnects = 0
        self._closing = False
        self._refusal: str | None = None
        self._ended: AuthError | None = None
        """Why the server ended our session for good (``session_ended``), if it did."""
        self._reconnector: asyncio.Task[None] | None = None
        self.base_url = ""
        self.server_shutdown = False
        """The server said it is shutting down (``server_shutdown``) before
        this connection closed: a clean stop, not a network failure."""
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

        @sio.on("peer_updated")  # type: ignore[untyped-decorator]
        def _updated(data: Any) -> None:
            if self._on_peer_updated is None:
                return
            try:
                self._on_peer_updated(RemotePeer.from_wire(data))
            except SignalingError as exc:
                log.warning("%s", exc)

        @sio.on("relay")  # type: ignore[untyped-decorator]
        def _relay(data: Any) -> None:
            if (
                self._on_relay is not None
                and isinstance(data, dict)
                and isinstance(data.get("from"), str)
                and isinstance(data.get("data"), str | bytes)
            ):
                self._on_relay(data["from"], data["data"])
            else:
                log.warning("ignoring malformed relay from server")

        @sio.on("probe")  # type: ignore[untyped-decorator]
        def _probe(data: Any) -> bool:
            # The server asks before it lets another connection resume our id:
            # answering keeps it ours (any ack would do; this one says so).
            return True

        @sio.on("resume_attempt")  # type: ignore[untyped-decorator]
        def _resume_attempt(data: Any) -> None:
            # The server refused someone who presented our resume secret and
            # our credentials while we were connected: say so, loudly.
            log.warning(
                "the signaling server refused another connection that tried to take "
                "over our peer id (it held our resume secret)"
            )

        @sio.on("session_ended")  # type: ignore[untyped-decorator]
        def _session_ended(data: Any) -> None:
            # Our credentials no longer admit us (an invite revoked or expired):
            # the server closes the connection next, and no reconnect can help.
            # The words are ours: text from the server stays out of exceptions.
            reason = data.get("reason") if isinstance(data, dict) else None
            known = reason if isinstance(reason, str) and reason in SESSION_ENDED else None
            self._ended = AuthError(
                f"the signaling server at {self.base_url} ended our session: "
                + (SESSION_ENDED[known] if known else "it gave no reason we know"),
                f"invite_{known}" if known else "session_ended",
            )

        @sio.on("server_shutdown")  # type: ignore[untyped-decorator]
        def _server_shutdown(data: Any) -> None:
            # It closes our transport next; the reconnect loop finds the next server.
            log.info("the signaling server is shutting down")
            self.server_shutdown = True

        @sio.on("error")  # type: ignore[untyped-decorator]
        def _error(data: Any) -> None:
            log.debug("signaling server reported: %r", data)

        @sio.event  # type: ignore[untyped-decorator]
        def connect_error(data: Any) -> None:
            message = data.get("message") if isinstance(data, dict) else data
            self._refusal = str(message)

        @sio.event  # type: ignore[untyped-decorator]
        def disconnect(reason: Any = None) -> None:
            ended = self._ended
            if ended is not None and not self._closing:
                log.warning("signaling: %s; not reconnecting", ended)
                self._target = None  # nothing to go back to
                if self._on_rejoined is not None:
                    self._on_rejoined(None, ended)
                return
            if not self._closing:
                if self.server_shutdown:
                    log.info("signaling server shut down; reconnecting")
                else:
                    log.warning("signaling connection lost (%s)", reason)
                self._on_disconnected()
                self.server_shutdown = False
                running = self._reconnector
                if self._target is not None and (running is None or running.done()):
                    self._reconnector = self._tasks.spawn(self._reconnect_loop(), "reconnect")

    async def _reconnect_loop(self) -> None:
        """Back to the server, then back into the room under the same id.

        Until both work: a failed rejoin is reported through ``on_rejoined(None,
        error)`` and tried again after the next backoff delay (reconnecting
        first if the connection dropped meanwhile). A drop while this runs
        starts no second loop; this one notices it."""
        assert self._target is not None
        url, token, timeout = self._target
        attempt = 0
        while not self._closing:
            attempt += 1
            await asyncio.sleep(self.reconnect_settings.delay(attempt))
            if not self._sio.connected:
                try:
                    await self._sio.connect(
                        url,
                        headers={"Authorization": f"token {token}"} if token else {},
                        auth={"token": token} if token else None,
                        transports=["websocket"],
                        socketio_path=self._path,
                        wait_timeout=timeout,
                    )
                except (socketio.exceptions.ConnectionError, ValueError) as exc:
                    log.info("signaling reconnect attempt %d failed: %s", attempt, exc)
                    await self._release()
                    if is_invite_token(token) and await self._invite_refused(url, token):
                        return  # expired or revoked: no retry can change that
                    continue
                self.reconnects += 1
                log.info("signaling connection back after %d attempt(s)", attempt)
            if self._membership is None:
                if self._on_rejoined is not None:
                    self._on_rejoined(None, None)
                return
            try:
                result = await self._rejoin(self._membership, timeout)
            except AuthError as exc:  # these credentials no longer admit us: final
                log.warning("rejoin refused (%s); not trying again", exc)
                if self._on_rejoined is not None and not self._closing:
                    self._on_rejoined(None, exc)
                return
            except P2PError as exc:
                log.warning("rejoin failed (attempt %d, trying again): %s", attempt, exc)
                if self._on_rejoined is not None and not self._closing:
                    self._on_rejoined(None, exc)
                continue
            if not self._sio.connected:
                continue  # dropped again right after the reply: in again first
            if self._on_rejoined is not None:
                self._on_rejoined(result, None)
            return

    async def _invite_refused(self, url: str, token: str | None) -> bool:
        """After a failed reconnect with an invite: is the invite itself refused
        now (expired, revoked)? Then it is reported (``on_rejoined(None, error)``)
        and the reconnect loop ends; a server that is only down is retried."""
        assert token is not None
        try:
            await check_invite(url, token)
        except AuthError as exc:
            log.warning("signaling: %s; not reconnecting", exc)
            if self._on_rejoined is not None and not self._closing:
                self._on_rejoined(None, exc)
            return True
        except SignalingError:
            return False
        return False

    async def _rejoin(
        self, membership: tuple[str, str, dict[str, Any]], timeout: float
    ) -> JoinResult:
        """Into the room again: under our id if the server takes the resume,
        else under a new one."""
        room, name, caps = membership
        try:
            return await self.join(room, name, caps, timeout=timeout, resume=self._resume)
        except SignalingError as exc:
            if exc.code == "already_joined":
                # an earlier attempt got in, but its reply was lost: out, then in again
                await self._call("leave", {}, timeout)
                return await self.join(room, name, caps, timeout=timeout, resume=self._resume)
            if exc.code != "invalid_resume":
                raise
            log.warning("resume refused (%s): joining under a new id", exc)
        return await self.join(room, name, caps, timeout=timeout)

    async def connect(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        """Connect, turning the library's vague failures into precise errors."""
        base = normalise_base_url(url)
        self.base_url = base
        path = urlsplit(base).path.lstrip("/") + "p2p/socket.io"
        self._path = path
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
        self._target = (base, token, timeout)

    async def _release(self) -> None:
        """A failed connect leaves engine.io's HTTP session open; close it."""
        http = getattr(self._sio.eio, "http", None)
        if http is not None and not http.closed and not self._sio.eio.external_http:
            await http.close()

    async def _diagnose(self, base: str, token: str | None, exc: Exception) -> SignalingError:
        """Ask the health endpoint why the connection failed."""
        refusal = self._refusal or ""
        if refusal.startswith("too_many_connections"):
            return SignalingError(
                f"the signaling server at {base} refused the connection ({refusal})",
                "too_many_connections",
            )
        if refusal.startswith("unauthorized") and is_invite_token(token):
            return AuthError(f"the signaling server at {base} refused the invite ({refusal})")
        if refusal.startswith("unauthorized"):
            return AuthError(
                f"the signaling server at {base} refused the connection ({refusal}); "
                "pass the token printed by p2p-nb-signal with token=..."
            )
        if is_invite_token(token):
            assert token is not None
            await check_invite(base, token)  # raises AuthError with the server's reason
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
        except socketio.exceptions.SocketIOError as exc:
            raise SignalingError(
                f"not connected to the signaling server ({exc or type(exc).__name__})",
                "disconnected",
            ) from exc
        if not isinstance(reply, dict):
            raise SignalingError(
                f"unexpected reply to {event!r}: a {_kind(reply)}, not an object", "bad_reply"
            )
        if not reply.get("ok"):
            err = reply.get("error")
            err = err if isinstance(err, dict) else {}
            code = str(err.get("code", "refused"))
            raise REFUSALS.get(code, SignalingError)(
                f"{event} refused: {err.get('message', 'no reason given')}", code
            )
        return reply

    async def join(
        self,
        room: str,
        name: str,
        capabilities: dict[str, Any],
        *,
        timeout: float = 10.0,
        resume: dict[str, str] | None = None,
    ) -> JoinResult:
        payload: dict[str, Any] = {
            "room": room,
            "name": name,
            "capabilities": capabilities,
            "resumable": True,
        }
        if resume is not None:
            payload["resume"] = resume
        reply = await self._call("join", payload, timeout)
        peers = reply.get("peers")
        if not isinstance(reply.get("peer_id"), str) or not isinstance(peers, list):
            wrong = [
                f"'{key}' is a {_kind(reply.get(key))}"
                for key, kind in (("peer_id", str), ("peers", list))
                if not isinstance(reply.get(key), kind)
            ]
            raise SignalingError(f"malformed join reply: {', '.join(wrong)}", "bad_reply")
        secret = reply.get("resume_secret")
        result = JoinResult(
            room=str(reply.get("room", room)),
            peer_id=reply["peer_id"],
            name=str(reply.get("name", name)),
            peers=[RemotePeer.from_wire(p) for p in peers],
            resume_secret=secret if isinstance(secret, str) else None,
            resumed=reply.get("resumed") is True,
            relay=reply.get("relay") is True,
            ice_servers=_ice_servers(reply.get("ice_servers", [])),
        )
        self._membership = (result.room, name, capabilities)
        self._resume = (
            {"peer_id": result.peer_id, "secret": result.resume_secret}
            if result.resume_secret
            else None
        )
        return result

    async def update(self, capabilities: dict[str, Any], *, timeout: float = 10.0) -> None:
        """Tell the room (and later joiners) our new capabilities."""
        if self._membership is not None:
            room, name, _ = self._membership
            self._membership = (room, name, capabilities)
        await self._call("update", {"capabilities": capabilities}, timeout)

    async def relay(self, to: str, data: str | bytes, *, timeout: float = 10.0) -> None:
        """One data-channel frame for ``to``, through the server (acknowledged)."""
        await self._call("relay", {"to": to, "data": data}, timeout)

    async def signal(self, to: str, payload: dict[str, Any], *, timeout: float = 10.0) -> None:
        await self._call("signal", {"to": to, **payload}, timeout)

    async def create_invite(self, ttl: float, *, timeout: float = 10.0) -> dict[str, Any]:
        """An invite token to our room: ``{"token", "room", "id", "expires"}``
        (and ``"server_url"`` when the server knows its public address)."""
        reply = await self._call("invite", {"ttl": ttl}, timeout)
        if not is_invite_token(reply.get("token")) or not isinstance(reply.get("room"), str):
            raise SignalingError("malformed invite reply: no token or room", "bad_reply")
        return reply

    async def revoke_invite(self, token: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """The server's reply: ``{"id", "closed"}`` and, from servers that say
        so, ``"peers"``: the peer ids of the connections it closed."""
        return await self._call("revoke_invite", {"token": token}, timeout)

    async def leave(self, *, timeout: float = 5.0) -> None:
        self._membership = None
        self._resume = None
        await self._call("leave", {}, timeout)

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected)

    async def close(self) -> None:
        self._closing = True
        await self._tasks.aclose()
        if self._sio.connected:
            await self._sio.disconnect()
        await self._release()
