"""``P2PApp``: one room membership and the public API notebooks use.

All state lives on one event loop (the network thread's inside a kernel); the
public coroutines hop there and back, so they can be awaited from the kernel's
loop, a widget callback's loop, or a plain script's loop alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import getpass
import inspect
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from aiortc import RTCIceServer

from . import protocol
from ._aiortc import StableCertificate
from .capabilities import Capabilities
from .discovery import discover_server
from .errors import (
    AppClosed,
    AuthError,
    InviteError,
    NameRefused,
    P2PError,
    PeerUnavailable,
    ProtocolError,
    RoomSecretError,
    SignalingError,
    TransferError,
)
from .events import Event, EventBus, EventStream, Handler
from .files import safe_file_name
from .invite import Invite, format_invite, invite_server_url, parse_invite
from .links import OPEN_STATES, ConnectionQuality, LinkStatus, MeshSettings
from .memory import release_memory
from .mesh import Mesh
from .names import MAX_NAME_CHARS, NameProblem, RoomNames, clean_name
from .netthread import NetworkThread
from .outgoing import Owed
from .rekey import REKEY_TYPE, EpochKey, Rekey, Rekeying, RoomEpochs
from .roomkey import RoomKey, secret_warning
from .signaling import JoinResult, RemotePeer, SignalingClient
from .tasks import TaskSet
from .transfer import (
    FileShare,
    IncomingTransfer,
    ReceivedFile,
    TransferManager,
    TransferSettings,
)

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_HISTORY = 10_000
"""Chat messages kept in ``app.messages`` (oldest dropped first)."""
DEFAULT_INVITE_TTL = 24 * 3600.0
PLAIN_INVITE_WARNING = (
    "invite to room %r: it carries no room secret (the room was joined without one), "
    "so the signaling server's operator stays trusted and could sit in the middle; "
    "join with secret=p2p_nb.new_room_secret() to keep them out"
)
PUBLIC_URL_ENV = "P2P_NB_PUBLIC_URL"
EJECTED_REASONS = frozenset({"revoked", "expired"})
"""``peer_left`` reasons after which nothing more from that peer is shown."""
MAX_EJECTED = 1000
SESSION_ENDED_CODES = frozenset({"invite_revoked", "invite_expired"})
"""Codes of an ``AuthError`` for a session the server ended: we leave the room."""
"""The base URL others reach the signaling service at: what invites name (the
Jupyter extension sets it for its kernels from its ``public_url`` trait)."""
DATAFRAME_FORMATS = ("parquet", "csv")
SETTLE_TIMEOUT = 1.0
"""Seconds leaving waits for open links to settle (acks both ways, see
``Outgoing.drain``) before it tells the server: a peer that does not answer
delays a leave by at most this."""


def _networked(
    fn: Callable[Concatenate[P2PApp, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[P2PApp, P], Coroutine[Any, Any, T]]:
    """Run the coroutine on the app's network loop, whichever loop awaits it;
    :class:`AppClosed` after ``disconnect()`` (whose loop may be gone)."""

    async def wrapper(self: P2PApp, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise AppClosed()
        coro = fn(self, *args, **kwargs)
        if self._net is None:
            return await coro
        return await self._net.run(coro)

    return functools.update_wrapper(wrapper, fn)


def _in_kernel() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _ice_servers(config: Iterable[RTCIceServer | dict[str, Any]] | None) -> list[RTCIceServer]:
    servers: list[RTCIceServer] = []
    for item in config or []:
        servers.append(item if isinstance(item, RTCIceServer) else RTCIceServer(**item))
    return servers


@dataclass(frozen=True)
class PeerInfo:
    peer_id: str
    name: str
    state: str
    capabilities: dict[str, Any]
    """The peer's latest capabilities in their wire form (``Capabilities.to_wire()``)."""


@dataclass(frozen=True)
class CustomMessage:
    """An application-defined message (``app.send_custom``), as received."""

    type: str
    sender: str
    payload: dict[str, Any]
    """The message's fields except ``v`` and ``type``."""


@dataclass(frozen=True)
class MeshValidation:
    """The whole room's mesh as ``validate_mesh()`` saw it: pairs of peer ids,
    each pair sorted, from what every peer reports about its own links."""

    members: list[str]
    connected: list[tuple[str, str]]
    """Pairs with an open link (direct or relayed)."""
    relayed: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    """Pairs without an open link that should have one."""
    limited: list[tuple[str, str]]
    """Pairs left unconnected on purpose (a ``max_connections`` is reached)."""
    unknown: list[tuple[str, str]]
    """Pairs neither of whose peers reported (no link to us to report over)."""
    healing: list[str]
    """Peers we started reconnecting to because our link to them was missing."""

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unknown


def _as_capabilities(value: Capabilities | dict[str, Any] | None) -> Capabilities:
    if value is None:
        return Capabilities()
    if isinstance(value, Capabilities):
        return value
    if not isinstance(value, dict):
        raise TypeError("capabilities must be a Capabilities or a dict")
    if {"resources", "location", "rev"} & set(value):
        try:
            return Capabilities.from_wire(value)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from exc
    return Capabilities(**value)


class P2PApp:
    """A peer: connected to a signaling service, member of at most one room.

    Create it with ``await P2PApp.connect()``.
    """

    def __init__(
        self,
        *,
        net: NetworkThread | None,
        ice_servers: list[RTCIceServer],
        transfer_settings: TransferSettings | None = None,
        mesh_settings: MeshSettings | None = None,
    ) -> None:
        self._net = net
        self._ice_servers = ice_servers
        self.mesh_settings = mesh_settings or MeshSettings()
        self._capabilities = Capabilities()
        self._remote_caps: dict[str, Capabilities] = {}
        self._custom_types: dict[str, int] = {}
        self._relay_allowed = False
        self._room_key: RoomKey | None = None
        self._room_secret: str | None = None
        """The secret we joined with (never sent; put in the invites we make)."""
        self._invite: Invite | None = None
        self._names: RoomNames | None = None
        """In a room with a secret: the names we show, unique by our own check."""
        self._epochs: RoomEpochs | None = None
        """In a room with a secret: its epochs (p2p_nb/rekey.py)."""
        self._rekeying: Rekeying | None = None
        self._sealed: dict[str, Any] = {}
        """The latest sealed profile of each peer, opened again after a re-key."""
        self._public_url: str | None = None
        self._certificate = StableCertificate()
        """One DTLS certificate for all our connections: reconnects keep their safety code."""
        self.transfer_settings = transfer_settings or TransferSettings()
        self._transfers: TransferManager | None = None
        self._received: dict[str, ReceivedFile] = {}
        self._bus = EventBus()
        self._signaling: SignalingClient | None = None
        self._mesh: Mesh | None = None
        self._tasks: TaskSet | None = None
        self._peers: dict[str, RemotePeer] = {}
        self._last_seq: dict[str, int] = {}
        self._seq = 0
        self._messages: deque[protocol.ChatMessage] = deque(maxlen=MAX_HISTORY)
        self.peer_id: str | None = None
        self.room: str | None = None
        self.name: str = ""
        self.url: str = ""
        self._closed = False
        self._held: list[Callable[[], None]] | None = None
        self._holds = 0
        """Joins, rejoins and signaling outages under way; signaling events
        are held while there is any (see ``_begin_hold``)."""
        self._away = False
        """Signaling was lost while in a room; held until the rejoin is handled
        (a join reply and the events after it can be handled in either order)."""
        self._rejoin_lock = asyncio.Lock()
        self._rejoin_failure: str | None = None
        """The code of the last failed rejoin reported (each kind is reported once)."""
        self._unconfirmed: set[str] = set()
        """Peers the server's roster lacked when we rejoined while our link to
        them was still open: after a server restart they may not be back yet.
        One whose link then closes (before the server announces it) has left."""
        self._ejected: dict[str, None] = {}
        """Peers the server put out (their invite revoked or expired): nothing
        more from them is shown, even what their closing link still delivers.
        Insertion-ordered, the oldest forgotten beyond :data:`MAX_EJECTED`."""

    # ----------------------------------------------------------------- set-up
    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        token: str | None = None,
        *,
        ice_servers: Iterable[RTCIceServer | dict[str, Any]] | None = None,
        thread: bool | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        auto_accept_max_bytes: int | None = None,
        mesh_settings: MeshSettings | None = None,
        invite: str | None = None,
        public_url: str | None = None,
        timeout: float = 10.0,
    ) -> P2PApp:
        """Connect to a signaling service.

        ``invite``: an invite link (from :meth:`create_invite`, on any machine):
        it names the server, the room and its secret, so ``url`` and ``token``
        are not needed and :meth:`join_room` needs only a name. Raises
        :class:`~p2p_nb.errors.InviteError` for a malformed link and
        :class:`~p2p_nb.errors.AuthError` with the server's reason for one it
        refuses (expired, revoked, altered, another server). ``public_url``: the
        base URL others reach this signaling service at, for the invites we make
        (default: ``$P2P_NB_PUBLIC_URL``, else ``url``; the address a server's
        invite reply names is not taken from it, see docs/protocol.md section 7).

        Without ``url`` the Jupyter server this kernel runs under is used (its
        URL and token are discovered). ``ice_servers`` defaults to none: peers
        on one machine or LAN need no STUN/TURN; a signaling server configured
        with a TURN server hands out credentials for it, used after these.
        ``thread`` (default: only inside a kernel) runs the network on its own
        thread, so blocking cells do not drop peers. Received files go to ``download_dir`` (default:
        ``p2p_downloads/`` in the current directory, beside the notebook); offers
        up to ``auto_accept_max_bytes`` are accepted without asking (default: ask).
        ``mesh_settings`` tunes liveness (ping period, pong timeout), the
        ``quality`` event period, reconnection and the relay fallback.
        """
        parsed: Invite | None = None
        if invite is not None:
            parsed = parse_invite(invite)
            if url is not None and url.rstrip("/") != parsed.server_url.rstrip("/"):
                raise InviteError(f"the invite is for {parsed.server_url}, not {url}")
            url, token = parsed.server_url, parsed.token
        if url is None:
            found = discover_server()
            if found is None:
                raise SignalingError(
                    "no signaling URL given and no Jupyter server found for this kernel; "
                    "pass url=... and token=... (or set P2P_NB_URL and P2P_NB_TOKEN)",
                    "no_server",
                )
            url, discovered_token = found
            token = token if token is not None else discovered_token
        use_thread = _in_kernel() if thread is None else thread
        net = NetworkThread() if use_thread else None
        settings = TransferSettings(auto_accept_max_bytes=auto_accept_max_bytes)
        if download_dir is not None:
            settings.download_dir = Path(download_dir)
        app = cls(
            net=net,
            ice_servers=_ice_servers(ice_servers),
            transfer_settings=settings,
            mesh_settings=mesh_settings,
        )
        app._invite = parsed
        app._public_url = public_url or os.environ.get(PUBLIC_URL_ENV) or None
        try:
            await app._start(url, token, timeout)
        except BaseException:
            if net is not None:
                net.stop()
            raise
        return app

    @_networked
    async def _start(self, url: str, token: str | None, timeout: float) -> None:
        self._tasks = TaskSet("app")
        self._signaling = SignalingClient(
            on_peer_joined=self._on_peer_joined,
            on_peer_left=self._on_peer_left,
            on_signal=self._on_signal,
            on_disconnected=self._on_signaling_lost,
            on_peer_updated=self._on_peer_updated,
            on_relay=self._on_relay,
            on_rejoined=self._on_rejoined,
        )
        await self._signaling.connect(url, token, timeout=timeout)
        self.url = self._signaling.base_url

    @_networked
    async def join_room(
        self,
        room: str | None = None,
        name: str | None = None,
        *,
        capabilities: Capabilities | dict[str, Any] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Join ``room`` and start connecting to everyone in it; returns our peer id.

        ``capabilities``: a :class:`~p2p_nb.capabilities.Capabilities` or a dict
        of its fields (``role``, ``services``, ``max_connections``, ...).
        ``secret``: the room's secret (8 to 1024 characters), known to its
        members and never sent anywhere: every peer must have the same one, and
        a signaling server cannot sit in the middle or read relayed frames
        (see docs/protocol.md, "Room secret"). Raises
        :class:`~p2p_nb.errors.RoomSecretError` for an unusable secret. After
        ``connect(invite=...)`` the room and the secret come from the invite.
        """
        signaling = self._require_signaling()
        if self.room is not None:
            raise SignalingError(f"already in room {self.room!r}; leave_room() first", "joined")
        if self._invite is not None:
            if room is not None and room != self._invite.room:
                raise InviteError(f"the invite is for room {self._invite.room!r}, not {room!r}")
            room = self._invite.room
            secret = secret if secret is not None else self._invite.secret
        if room is None:
            raise ValueError("join_room needs a room (or an app connected with an invite)")
        weak = secret_warning(secret) if isinstance(secret, str) else None
        if weak is not None:
            log.warning("room %r: %s", room, weak)
        # scrypt takes a fraction of a second: off the loop
        key = await asyncio.to_thread(RoomKey.derive, room, secret) if secret is not None else None
        self._epochs = RoomEpochs(key, secret) if key is not None and secret is not None else None
        self._room_key = self._epochs.key if self._epochs is not None else None
        self._rekeying = (
            Rekeying(self, self._epochs, self._certificate) if self._epochs is not None else None
        )
        self._room_secret = secret
        name = name or os.environ.get("P2P_NB_NAME") or getpass.getuser()
        if capabilities is not None:
            self._capabilities = _as_capabilities(capabilities)
        # Others may announce themselves or offer before our join reply arrives:
        # hold those events and replay them once the room is entered.
        self._begin_hold()
        try:
            if self._room_key is not None:
                # the server gets a pseudonym and, once our id is known, a sealed
                # profile: so it checks the real name nowhere, and we do it here
                try:
                    name = clean_name(name, MAX_NAME_CHARS)
                except NameProblem as exc:
                    raise NameRefused(exc.message, exc.code) from None
                pseudonym = f"member-{secrets.token_hex(4)}"
                result = await signaling.join(room, pseudonym, {}, timeout=timeout)
                result = dataclasses.replace(result, name=name)
            else:
                caps = self._capabilities.to_wire()
                result = await signaling.join(room, name, caps, timeout=timeout)
            self._enter_room(result)
            if self._room_key is not None:
                await self._send_profile()
        finally:
            self._end_hold()
        return result.peer_id

    async def _send_profile(self) -> None:
        """In a room with a secret: our name and capabilities, sealed for the
        members (the server keeps the blob for later joiners and rejoins)."""
        signaling = self._signaling
        if self._room_key is None or signaling is None or self.peer_id is None:
            return
        sealed = self._room_key.seal_profile(self.peer_id, self.name, self._capabilities.to_wire())
        await signaling.update(sealed)

    def _unseal(self, peer: RemotePeer) -> RemotePeer:
        """A peer as the server introduced it, with its sealed profile opened (in
        a room with a secret); a profile that does not open is reported and the
        peer keeps its pseudonym and default capabilities. Either way the name
        shown passes this member's uniqueness check (:class:`RoomNames`)."""
        if self._room_key is None:
            return peer
        name, caps = peer.name, peer.capabilities
        if isinstance(caps, dict) and "sealed" in caps:
            self._sealed[peer.peer_id] = caps
        try:
            opened = self._room_key.open_profile(peer.peer_id, peer.capabilities)
            if opened is not None:
                name, caps = opened
                name = clean_name(name, MAX_NAME_CHARS)
        except (RoomSecretError, NameProblem) as exc:
            known = self._peers.get(peer.peer_id)
            if known is not None:
                # A member we know re-sealed its profile with a key we do not
                # have (yet): it adopted a re-key whose ``rekey`` is still on
                # its way to us (the server's update can overtake it), or it
                # sealed with the key it had before ours (it re-seals on
                # adopting). It keeps what we showed; the blob is opened again
                # when we adopt (``rekey_adopted``), reported only if it fails then.
                if not self._sealed_before_rekey(peer):
                    log.info("profile update of %s does not open yet: %s", peer.peer_id, exc)
                return dataclasses.replace(peer, name=known.name, capabilities=known.capabilities)
            self._emit("error", peer.peer_id, RoomSecretError(str(exc)))
            name, caps = peer.name, {}
        shown = self._show_name(peer.peer_id, name)
        return dataclasses.replace(peer, name=shown, capabilities=caps)

    @staticmethod
    def _opens(key: RoomKey, peer: RemotePeer) -> bool:
        try:
            return key.open_profile(peer.peer_id, peer.capabilities) is not None
        except RoomSecretError:
            return False

    def _sealed_before_rekey(self, peer: RemotePeer) -> bool:
        previous = self._epochs.previous if self._epochs is not None else None
        try:
            return (
                previous is not None
                and previous.open_profile(peer.peer_id, peer.capabilities) is not None
            )
        except RoomSecretError:
            return False

    def _show_name(self, peer_id: str, name: str) -> str:
        """What to show for ``peer_id`` claiming ``name``; a claim of a name
        already shown is refused, once, with an ``error`` event (NameRefused)."""
        if self._names is None:
            return name
        shown, holder = self._names.claim(peer_id, name)
        if holder is not None:
            whose = "yours" if holder == self.peer_id else f"already shown for {holder}"
            message = (
                f"{peer_id} claims the name {name!r}, which is {whose} in this room: "
                f"it is shown as {shown!r} (in a room with a secret every member checks names)"
            )
            self._emit("error", peer_id, NameRefused(message, "name_taken"))
        return shown

    def _rename(self, peer_id: str, name: str) -> None:
        """A peer's shown name changed (its profile arrived, or a name it was
        refused became free): the roster, its link and a ``peer_updated`` say so."""
        known = self._peers.get(peer_id)
        if known is None or known.name == name:
            return
        self._peers[peer_id] = dataclasses.replace(known, name=name)
        link = self._mesh.links.get(peer_id) if self._mesh is not None else None
        if link is not None:
            link.name = name
        caps = self._remote_caps.get(peer_id, Capabilities())
        self._emit("peer_updated", peer_id, {"name": name, "capabilities": caps})

    @_networked
    async def create_invite(self, ttl: float = DEFAULT_INVITE_TTL) -> str:
        """An invite link to our room, valid ``ttl`` seconds (60 s to 30 days;
        default one day), for anyone to join with ``P2PApp.connect(invite=...)``
        from any machine that reaches this signaling service. The room, the
        invite token and the room secret (if the room has one) are after
        ``#``, which is never sent to a server: join with
        ``secret=p2p_nb.new_room_secret()`` to keep the signaling operator
        out. In a room joined without a secret the link has no ``secret=``,
        so whoever runs the signaling server could sit in the middle of
        the guest's links (only comparing safety codes shows it): a warning is
        logged (logger ``p2p_nb.app``) each time. Revoke it with
        :meth:`revoke_invite`."""
        if self.room is None:
            raise SignalingError("join a room before inviting to it", "not_joined")
        reply = await self._require_signaling().create_invite(ttl)
        server = invite_server_url(self.url, self._public_url, reply.get("server_url"))
        link = format_invite(
            str(server), str(reply["room"]), str(reply["token"]), self._room_secret
        )
        if self._room_secret is None:
            log.warning(PLAIN_INVITE_WARNING, self.room)
        return link

    @_networked
    async def revoke_invite(self, invite: str, *, rekey: bool = True) -> None:
        """Revoke an invite we made (its link, or the token alone): nobody joins
        with it any more, and those who came with it are disconnected.

        In a room with a secret, ``rekey`` (the default) then gives the room a
        new secret without them (:meth:`rekey`): the secret in the revoked
        link opens nothing any more, and invites made from then on carry the
        new one (those made before no longer work). Which peers came with
        the invite only the server knows: its reply names them; a server
        that does not (or lies) is why :meth:`rekey` takes ``exclude``."""
        token = parse_invite(invite).token if "://" in invite else invite
        reply = await self._require_signaling().revoke_invite(token)
        if not rekey or self._epochs is None or self.room is None:
            return
        guests = reply.get("peers")
        if not isinstance(guests, list):
            self._emit(
                "error",
                None,
                RoomSecretError(
                    "the server did not say which peers came with the revoked invite, so "
                    "the room was not re-keyed: call rekey(exclude=[their peer ids])"
                ),
            )
            return
        await self.rekey(exclude=[g for g in guests if isinstance(g, str)])

    @_networked
    async def rekey(self, exclude: Iterable[str] = ()) -> int:
        """Give the room a new random secret, sent only to the members we keep
        (everyone in the room but ``exclude``) over our links to them; returns
        the new epoch. Every member uses it from then on and closes its links
        to the excluded; a member away meanwhile gets it when it is back over
        a link to one that has it (docs/protocol.md, "Re-keying")."""
        self._require_mesh()
        if self._rekeying is None:
            raise RoomSecretError("only a room with a secret can be re-keyed")
        return await self._rekeying.start(exclude)

    # What re-keying (p2p_nb/rekey.py, Rekeying) needs of us: RekeyHost.
    def rekey_links(self) -> Mesh | None:
        return self._mesh

    def rekey_members(self) -> list[str]:
        return list(self._peers)

    def rekey_drop(self, peer_id: str) -> None:
        self._on_peer_left(peer_id, "rekeyed")

    def rekey_next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def rekey_report(self, peer_id: str | None, error: P2PError) -> None:
        self._emit("error", peer_id, error)

    def rekey_spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None
        self._tasks.spawn(coro, name)

    async def rekey_adopted(self, rekey: Rekey, key: EpochKey) -> None:
        self._room_key = key
        self._room_secret = rekey.secret  # what the invites we make carry from now on
        self._emit(
            "room_rekeyed", None, {"epoch": rekey.epoch, "by": rekey.by, "out": list(rekey.out)}
        )
        for pid, sealed in list(self._sealed.items()):  # profiles sealed with it already
            if pid in self._peers:
                peer = dataclasses.replace(self._peers[pid], capabilities=sealed)
                if not self._opens(key, peer) and not self._sealed_before_rekey(peer):
                    self._emit(  # neither the new key nor the one before it opens it
                        "error",
                        pid,
                        RoomSecretError(f"the profile of {pid} does not open with the room's key"),
                    )
                    continue
                self._on_peer_updated(peer)
        await self._quietly(self._send_profile())  # sealed with the new profile key

    def _hold(self, handler: Callable[..., None], *args: Any) -> bool:
        """While a join is in flight, keep a signaling event for later (True if kept)."""
        if self._held is None:
            return False
        self._held.append(functools.partial(handler, *args))
        return True

    def _begin_hold(self) -> None:
        """Signaling events wait (in order) until the matching :meth:`_end_hold`:
        a join or rejoin in flight, or a signaling connection that is away."""
        self._holds += 1
        if self._held is None:
            self._held = []

    def _end_hold(self) -> None:
        self._holds -= 1
        if self._holds <= 0:
            self._holds = 0
            held, self._held = self._held or [], None
            for replay in held:
                replay()

    def _enter_room(self, result: JoinResult, owed: list[Owed] | None = None) -> None:
        self.peer_id, self.room, self.name = result.peer_id, result.room, result.name
        self._names = RoomNames(result.peer_id, result.name) if self._room_key else None
        self._relay_allowed = result.relay
        self._mesh = Mesh(
            result.peer_id,
            send_signal=self._send_signal,
            on_event=self._on_mesh_event,
            ice_servers=self._ice_servers + _ice_servers(result.ice_servers),
            settings=self.mesh_settings,
            send_relay=self._send_relay if result.relay else None,
            max_connections=self._capabilities.max_connections,
            relay_peers=lambda: self.find_peers_with_service("relay"),
            offers_relay=lambda: self.provides_service("relay"),
            certificate=self._certificate,
            room_key=self._room_key,
            owed=owed,
        )
        self._transfers = TransferManager(
            self._mesh,
            emit=self._emit,
            runner=self._run,
            peer_name=lambda pid: self._peers[pid].name if pid in self._peers else pid,
            settings=self.transfer_settings,
        )
        self._transfers.received = self._received
        self._emit("joined", None, {"room": result.room, "peer_id": result.peer_id})
        for peer in result.peers:
            self._add_peer(peer)

    @_networked
    async def leave_room(self) -> None:
        """Leave the room: every link closes; the signaling connection stays."""
        await self._leave()

    async def _settle_links(self) -> None:
        """Every open link sends what it owes and hears its acks (in parallel)."""
        mesh = self._mesh
        if mesh is not None:
            links = list(mesh.links.values())
            await asyncio.gather(
                *(link.out.drain(SETTLE_TIMEOUT) for link in links), return_exceptions=True
            )

    async def _leave(self) -> None:
        if self.room is None:
            return
        try:
            # before the server tells the room: peers must not see us go with
            # their last messages unconfirmed
            await self._settle_links()
            if self._signaling is not None and self._signaling.connected:
                try:
                    await self._signaling.leave()
                except P2PError as exc:
                    log.info("leave: %s", exc)
        finally:
            await self._leave_mesh()
            self.room = None
            self.peer_id = None

    async def _leave_mesh(self, *, hand_over: bool = False) -> list[Owed]:
        """Close the mesh; with ``hand_over``, return what its links owed
        their peers (with the seq we had reached from each), for the next."""
        owed: list[Owed] = []
        try:
            if self._transfers is not None:
                await self._transfers.close()
        finally:
            self._transfers = None
            try:
                if self._mesh is not None:
                    owed = await self._mesh.close(hand_over=hand_over)
                    for o in owed:
                        o.last_seq = max(o.last_seq, self._last_seq.get(o.peer_id, 0))
            finally:
                self._mesh = None
                self._peers.clear()
                self._unconfirmed.clear()
                self._remote_caps.clear()
                self._last_seq.clear()
                release_memory()
        return owed

    async def disconnect(self) -> None:
        """Leave, close every peer connection and stop all background work.

        Every step runs even if one before it fails (that failure is raised
        after the rest); from then on every call raises :class:`AppClosed`."""
        if self._closed:
            return
        try:
            await self._disconnect()
        finally:
            if self._net is not None:
                self._net.stop()

    async def close(self) -> None:
        """The same as :meth:`disconnect` (what ``async with`` ends with)."""
        await self.disconnect()

    async def __aenter__(self) -> P2PApp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    @_networked
    async def _disconnect(self) -> None:
        self._closed = True
        try:
            await self._leave()
        finally:
            try:
                if self._signaling is not None:
                    await self._signaling.close()
            finally:
                try:
                    if self._tasks is not None:
                        await self._tasks.aclose()
                finally:
                    self._emit("disconnected", None, {})

    # --------------------------------------------------------------- messages
    @_networked
    async def send_message(self, text: str, to: str | None = None) -> protocol.ChatMessage:
        """Send a chat message to every peer, or only to ``to``.

        Peers whose link is still opening get it as soon as it opens.
        """
        self._require_mesh()
        if not isinstance(text, str):
            raise TypeError("text must be a str")
        if len(text) > protocol.MAX_TEXT_CHARS:
            raise ValueError(
                f"message of {len(text)} characters exceeds {protocol.MAX_TEXT_CHARS}; "
                "share long text as a file"
            )
        msg = protocol.ChatMessage(
            text=text,
            seq=self._seq + 1,
            ts=time.time(),
            to=to,
            sender=self.peer_id or "",
            sender_name=self.name,
        )
        self._send_in_order(msg.encode(), msg.seq, to)
        self._messages.append(msg)
        self._emit("message_sent", to, msg)  # so views of app.messages see our own lines too
        return msg

    def _send_in_order(self, wire: str, seq: int, to: str | None) -> None:
        """Send a message numbered ``seq`` (the next of this sender's counter,
        shared by chat and application messages) to ``to`` or to everyone: the
        links keep it until the peer acknowledges it."""
        mesh = self._require_mesh()
        if to is not None and to not in mesh.links:
            raise PeerUnavailable(f"no peer {to!r} in room {self.room!r}")
        self._seq = seq
        for peer_id in [to] if to is not None else mesh.reachable():
            mesh.send(peer_id, wire, seq=seq)
        if to is None:
            mesh.owe_absent(wire, seq)  # peers not back yet under a new id

    def _first_time(self, peer_id: str, seq: int) -> bool:
        """False for a message sent again after a link failure, which we had."""
        if seq <= self._last_seq.get(peer_id, 0):
            log.debug("duplicate message %s from %s dropped", seq, peer_id)
            return False
        self._last_seq[peer_id] = seq
        return True

    # ------------------------------------------------------------------ files
    @_networked
    async def share_file(
        self, path: str | os.PathLike[str], to: str | None = None, *, name: str | None = None
    ) -> FileShare:
        """Offer a file to every peer (or only ``to``); returns at once.

        ``await share.wait()`` waits until every receiver has it (or declined).
        """
        transfers = self._require_transfers()
        return await transfers.share(Path(path), self._targets(to), name=name)

    @_networked
    async def share_dataframe(
        self,
        df: pandas.DataFrame,
        name: str,
        *,
        format: str = "parquet",
        to: str | None = None,
        compression: str | None = "zstd",
    ) -> FileShare:
        """Offer a DataFrame, serialised to Parquet (every dtype and the index
        survive) or CSV; receivers read it with ``app.received[name].dataframe()``."""
        transfers = self._require_transfers()
        if format not in DATAFRAME_FORMATS:
            raise ValueError(f"format must be one of {DATAFRAME_FORMATS}, not {format!r}")
        if not name or len(name) > 200:
            raise ValueError("name must be 1-200 characters")
        targets = self._targets(to)
        folder = Path(tempfile.mkdtemp(prefix="p2p-nb-df-"))
        # the file name is only what receivers see offered (meta carries the real
        # name); safe_file_name keeps it a base name within file-system limits
        path = folder / safe_file_name(f"{name.replace('/', '_')}.{format}")
        try:
            await asyncio.to_thread(_write_dataframe, df, path, format, compression)
            meta = {
                "name": name,
                "format": format,
                "shape": list(df.shape),
                "columns": [str(c) for c in df.columns[:500]],
                "dtypes": [str(t) for t in df.dtypes.iloc[:500]],
            }
            share = await transfers.share(
                path, targets, name=path.name, kind="dataframe", meta=meta
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # nothing will ever send it
            raise

        async def cleanup() -> None:
            try:
                await asyncio.gather(*(t._done for t in share.transfers.values()))
            finally:
                # every transfer has ended (or the app is closing): the senders
                # have the file open already or never will
                shutil.rmtree(folder, ignore_errors=True)

        assert self._tasks is not None
        self._tasks.spawn(cleanup(), f"cleanup-{name}")
        return share

    @property
    def offers(self) -> list[IncomingTransfer]:
        """Incoming offers still waiting for ``accept()`` or ``decline()``."""

        def read() -> list[IncomingTransfer]:
            if self._transfers is None:
                return []
            return [t for t in self._transfers.incoming.values() if t.state == "offered"]

        return self._live(read, [])

    @property
    def incoming_transfers(self) -> list[IncomingTransfer]:
        """Every incoming transfer of this room membership, whatever its state
        (offered, receiving, done, failed): a copy made on the network thread,
        safe to iterate from the kernel's (the panel reads this)."""

        def read() -> list[IncomingTransfer]:
            return list(self._transfers.incoming.values()) if self._transfers is not None else []

        return self._live(read, [])

    def set_auto_accept(self, max_bytes: int | None) -> None:
        """Accept offers up to ``max_bytes`` without asking; ``None`` turns it off."""
        if self._closed:
            raise AppClosed()
        self.transfer_settings.auto_accept_max_bytes = max_bytes

    def _require_transfers(self) -> TransferManager:
        if self._transfers is None:
            raise SignalingError("join a room first: await app.join_room(...)", "not_joined")
        return self._transfers

    def _targets(self, to: str | None) -> list[str]:
        mesh = self._require_mesh()
        if to is not None:
            mesh.link(to)
            return [to]
        targets = mesh.reachable()
        if not targets:
            raise PeerUnavailable(f"nobody in room {self.room!r} can be reached yet")
        return targets

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the network loop from any loop (what records' methods use)."""
        if self._net is None:
            return await coro
        return await self._net.run(coro)

    # ----------------------------------------------------------------- status
    # The network thread changes the mesh, the peers and the transfers at any
    # moment; the kernel's thread (and a widget's) reads them. Every read below
    # hops to the network loop and returns a copy made there (see
    # NetworkThread.call), so no caller ever iterates a dict being changed.
    def _snapshot(self, fn: Callable[[], T]) -> T:
        """``fn()`` evaluated on the network loop (at once if we are on it)."""
        net = self._net
        if net is None or net.is_current:
            return fn()
        return net.call(fn)

    def _live(self, fn: Callable[[], T], closed: T) -> T:
        """A snapshot of live state; ``closed`` (nobody, nothing) once disconnected."""
        if self._closed:
            return closed
        try:
            return self._snapshot(fn)
        except AppClosed:
            return closed

    @property
    def received(self) -> dict[str, ReceivedFile]:
        """Verified files and DataFrames received, by name (the latest of a name
        wins): a copy, still readable after ``disconnect()``."""
        if self._closed:
            return dict(self._received)
        return self._snapshot(lambda: dict(self._received))

    @property
    def messages(self) -> list[protocol.ChatMessage]:
        """The chat so far (at most the last ``MAX_HISTORY``), oldest first: a
        copy, still readable after ``disconnect()``."""
        if self._closed:
            return list(self._messages)
        return self._snapshot(lambda: list(self._messages))

    def connected_peers(self) -> list[str]:
        """Peer ids messages reach now: an open data channel, or a relayed link."""
        return self._live(
            lambda: self._mesh.connected_peers() if self._mesh is not None else [], []
        )

    def _link_of(self, peer_id: str) -> Any:
        if self._closed:
            raise AppClosed()
        if self._mesh is None or peer_id not in self._mesh.links:
            raise PeerUnavailable(f"no peer {peer_id!r} in this room")
        return self._mesh.links[peer_id]

    def connection_status(self, peer_id: str) -> LinkStatus:
        status: LinkStatus = self._snapshot(lambda: self._link_of(peer_id).status())
        return status

    def connection_quality(self, peer_id: str) -> ConnectionQuality:
        """RTT (our pings, and aiortc's SCTP estimate), bytes and messages each way,
        send buffer, state and time connected of the link to ``peer_id``."""
        quality: ConnectionQuality = self._snapshot(lambda: self._link_of(peer_id).quality())
        return quality

    def all_connection_qualities(self) -> dict[str, ConnectionQuality]:
        def read() -> dict[str, ConnectionQuality]:
            links = self._mesh.links if self._mesh is not None else {}
            return {pid: link.quality() for pid, link in links.items()}

        return self._live(read, {})

    @_networked
    async def validate_mesh(self, *, timeout: float = 2.0, heal: bool = True) -> MeshValidation:
        """Check the whole room's mesh and reconnect the missing links we are part of.

        Every peer we have an open link to is asked for its own links
        (``mesh-report``); pairs are judged from both ends' reports.
        """
        mesh = self._require_mesh()
        await mesh.collect_reports(timeout)
        me = self.peer_id or ""
        members = sorted({me, *self._peers})
        reports: dict[str, dict[str, str]] = {me: mesh.report()}
        for pid in mesh.connected_peers():  # only reports that are current
            if pid in mesh.reports:
                reports[pid] = mesh.reports[pid]
        connected, relayed, missing, limited, unknown = [], [], [], [], []
        healing: list[str] = []
        for i, x in enumerate(members):
            for y in members[i + 1 :]:
                pair = (x, y)
                if me in pair:  # our own end is known best
                    states = [reports[me].get(y if x == me else x, "new")]
                else:
                    states = [
                        s for s in (reports.get(x, {}).get(y), reports.get(y, {}).get(x)) if s
                    ]
                if not states:
                    unknown.append(pair)
                elif any(s in OPEN_STATES for s in states):
                    connected.append(pair)
                    if "relayed" in states:
                        relayed.append(pair)
                elif "limited" in states:
                    limited.append(pair)
                else:
                    missing.append(pair)
                    other = y if x == me else x if y == me else None
                    if heal and other is not None and other in mesh.links:
                        link = mesh.links[other]
                        if link.restart():
                            healing.append(other)
        return MeshValidation(members, connected, relayed, missing, limited, unknown, healing)

    # ----------------------------------------------------------- capabilities
    @property
    def local_capabilities(self) -> Capabilities:
        return self._capabilities

    @_networked
    async def update_capabilities(self, /, **changes: Any) -> Capabilities:
        """Change our capabilities (``role=``, ``services=``, ``max_connections=``,
        ``bandwidth=``, ``storage=``, ``region=``, ``timezone=``) and tell every peer."""
        caps = self._capabilities.replace(**changes)
        self._capabilities = caps
        mesh = self._mesh
        if mesh is None:
            return caps
        mesh.set_max_connections(caps.max_connections)
        wire = protocol.CapabilitiesUpdate(caps).encode()
        for pid in mesh.reachable():
            mesh.send(pid, wire)
        signaling = self._signaling
        if signaling is not None and signaling.connected:
            try:
                if self._room_key is not None:
                    await self._send_profile()
                else:
                    await signaling.update(caps.to_wire())
            except P2PError as exc:  # the data channels carried it anyway
                log.info("capabilities update through signaling failed: %s", exc)
        return caps

    def remote_capabilities(self, peer_id: str) -> Capabilities:
        def read() -> Capabilities:
            if self._closed:
                raise AppClosed()
            if peer_id not in self._peers:
                raise PeerUnavailable(f"no peer {peer_id!r} in this room")
            return self._remote_caps.get(peer_id, Capabilities())

        return self._snapshot(read)

    def all_remote_capabilities(self) -> dict[str, Capabilities]:
        return self._live(
            lambda: {pid: self._remote_caps.get(pid, Capabilities()) for pid in self._peers}, {}
        )

    def find_peers_with_service(self, name: str) -> list[str]:
        """Peer ids (sorted) that advertise the service ``name``."""
        return sorted(
            pid for pid, caps in self.all_remote_capabilities().items() if caps.provides(name)
        )

    def provides_service(self, name: str) -> bool:
        """Whether we advertise the service ``name``."""
        return self._capabilities.provides(name)

    def _set_remote_caps(self, peer_id: str, wire: Any, *, announce: bool) -> None:
        try:
            caps = Capabilities.from_wire(wire)
        except ProtocolError as exc:
            self._emit("error", peer_id, ProtocolError(f"capabilities of {peer_id}: {exc}"))
            caps = Capabilities()
        old = self._remote_caps.get(peer_id)
        if old is not None and caps.rev <= old.rev:
            return  # an update we already have (it comes both ways)
        self._remote_caps[peer_id] = caps
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._peers[peer_id] = dataclasses.replace(peer, capabilities=caps.to_wire())
        if announce:
            self._emit("peer_updated", peer_id, {"capabilities": caps})

    # ------------------------------------------------------- custom messages
    def register_handler(
        self, type: str, handler: Callable[[CustomMessage], Any]
    ) -> Callable[[], None]:
        """Call ``handler(message)`` (sync or async, on the registering loop) for
        every received message of the application-defined ``type``; returns a
        function that unregisters it. Types without a handler arrive as
        ``unknown_message`` events."""
        if self._closed:
            raise AppClosed()
        if type in protocol.BUILTIN_TYPES:
            raise ValueError(f"{type!r} is a built-in message type")
        protocol.encode_custom(type, {})  # validates the name

        def on_event(event: Event) -> Any:
            if event.data.type == type:
                return handler(event.data)
            return None

        off_bus = self._bus.on("custom_message", on_event)
        self._custom_types[type] = self._custom_types.get(type, 0) + 1

        def off() -> None:
            off_bus()
            left = self._custom_types.get(type, 0) - 1
            if left > 0:
                self._custom_types[type] = left
            else:
                self._custom_types.pop(type, None)

        return off

    @_networked
    async def send_custom(self, type: str, payload: dict[str, Any], to: str | None = None) -> None:
        """Send an application-defined message (``payload``'s fields in the envelope)
        to every peer, or only ``to``; the same order, queueing and delivery
        after link failures as chat."""
        self._require_mesh()
        seq = self._seq + 1
        self._send_in_order(protocol.encode_custom(type, payload, seq=seq), seq, to)

    @property
    def peers(self) -> dict[str, PeerInfo]:
        """Everyone in the room but us, with the state of our link to them."""

        def read() -> dict[str, PeerInfo]:
            links = self._mesh.links if self._mesh is not None else {}
            return {
                pid: PeerInfo(
                    peer_id=pid,
                    name=p.name,
                    state=links[pid].state if pid in links else "new",
                    capabilities=p.capabilities,
                )
                for pid, p in self._peers.items()
            }

        return self._live(read, {})

    # ----------------------------------------------------------------- events
    def events(self, *names: str) -> EventStream:
        """An async iterator of events (all, or only ``names``) from now on.

        It buffers (up to ``MAX_QUEUED_EVENTS``) until read, for as long as it
        is alive: it is released as soon as nothing refers to it any more
        (``await app.events("message").get()`` leaves nothing behind), when
        ``close()``/``aclose()`` is called, or at the end of ``async with``/``with``."""
        if self._closed:
            raise AppClosed()
        return self._bus.stream(frozenset(names))

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` for every ``name`` event; returns an unsubscribe function."""
        if self._closed:
            raise AppClosed()
        return self._bus.on(name, handler)

    def _emit(self, name: str, peer_id: str | None, data: Any) -> None:
        self._bus.emit(Event(name, peer_id, data))

    # ------------------------------------------------------ signaling → mesh
    def _require_signaling(self) -> SignalingClient:
        if self._closed or self._signaling is None:
            raise AppClosed()
        return self._signaling

    def _require_mesh(self) -> Mesh:
        if self._mesh is None:
            raise SignalingError("join a room first: await app.join_room(...)", "not_joined")
        return self._mesh

    def _add_peer(self, peer: RemotePeer) -> None:
        assert self._mesh is not None
        peer = self._unseal(peer)
        if peer.peer_id in self._peers:
            # already known: a peer re-announced after a signaling server restart
            self._unconfirmed.discard(peer.peer_id)
            self._set_remote_caps(peer.peer_id, peer.capabilities, announce=True)
            link = self._mesh.links.get(peer.peer_id)
            if link is not None and link.state == "lost":
                link.restart()  # it is back: so is a link we had given up on
            return
        self._peers[peer.peer_id] = peer
        self._set_remote_caps(peer.peer_id, peer.capabilities, announce=False)
        self._emit("peer_joined", peer.peer_id, {"name": peer.name})
        self._mesh.add_peer(peer.peer_id, peer.name)

    def _on_peer_joined(self, peer: RemotePeer) -> None:
        if self._hold(self._on_peer_joined, peer):
            return
        if self._mesh is not None and peer.peer_id != self.peer_id:
            self._add_peer(peer)

    def _on_peer_updated(self, peer: RemotePeer) -> None:
        if self._hold(self._on_peer_updated, peer):
            return
        if peer.peer_id in self._peers:
            peer = self._unseal(peer)
            if self._room_key is not None:
                # a sealed profile arrived after the peer's join: its real name
                self._rename(peer.peer_id, peer.name)
            self._set_remote_caps(peer.peer_id, peer.capabilities, announce=True)

    def _on_relay(self, from_id: str, data: str | bytes) -> None:
        if self._hold(self._on_relay, from_id, data):
            return
        if from_id in self._ejected:
            return
        if self._mesh is not None:
            self._mesh.handle_relay(from_id, data)

    async def _send_relay(self, peer_id: str, data: str | bytes) -> None:
        await self._require_signaling().relay(peer_id, data)

    def _on_rejoined(self, result: JoinResult | None, error: Exception | None) -> None:
        """Signaling is back: same identity (nobody noticed), or a new one; or
        a rejoin failed (``error``), and the signaling client tries again."""
        if result is None:
            if isinstance(error, AuthError):  # the signaling client has stopped trying
                if error.code in SESSION_ENDED_CODES:
                    message = f"out of room {self.room!r} for good: {error}"
                else:
                    message = f"cannot rejoin room {self.room!r}, not trying again: {error}"
                self._emit("error", None, AuthError(message, error.code))
                if error.code in SESSION_ENDED_CODES and self._tasks is not None:
                    self._tasks.spawn(self._put_out(), "put-out")
                return
            if error is not None:
                code = str(getattr(error, "code", "rejoin_failed"))
                if code != self._rejoin_failure:  # once per kind, not every retry
                    self._rejoin_failure = code
                    message = f"rejoining room {self.room!r} failed, trying again: {error}"
                    self._emit("error", None, SignalingError(message, code))
                return
            self._back()
            self._emit("signaling_restored", None, {"resumed": False, "room": None})
            return
        self._rejoin_failure = None
        if self._closed:
            return
        # Hold what the server sends (presence, offers for a new id) until this
        # rejoin is handled: the roster comes first, and a closing mesh never
        # sees what is meant for the next one.
        self._begin_hold()
        self._back()
        assert self._tasks is not None
        self._tasks.spawn(self._handle_rejoin(result), "rejoin")

    async def _put_out(self) -> None:
        """The server ended our session for good (our invite was revoked or
        expired): out of the room, every link closed (the members have
        dropped theirs), instead of links retrying for minutes."""
        peers = dict(self._peers)
        await self._leave()
        for pid, peer in peers.items():
            self._emit("peer_left", pid, {"name": peer.name, "reason": "session_ended"})

    def _back(self) -> None:
        """The outage's hold ends (the rejoin's own hold, if any, goes on)."""
        if self._away:
            self._away = False
            self._end_hold()

    async def _handle_rejoin(self, result: JoinResult) -> None:
        """One rejoin at a time (a second drop may come while one starts over)."""
        try:
            async with self._rejoin_lock:
                await self._apply_rejoin(result)
        finally:
            self._end_hold()

    async def _apply_rejoin(self, result: JoinResult) -> None:
        if self.room is None or self._mesh is None:
            # we left while the rejoin was under way: out again
            signaling = self._signaling
            if signaling is not None and not self._closed:
                await self._quietly(signaling.leave())
            self._emit("signaling_restored", None, {"resumed": False, "room": None})
            return
        if result.peer_id == self.peer_id:
            self._resumed(result)
            return
        # The server gave us a new id: every link must be made again. What
        # they owed goes again to the same people (by certificate) under
        # their new ids, and what we had from them is not shown twice.
        old = dict(self._peers)
        await self._settle_links()
        owed = await self._leave_mesh(hand_over=True)
        for pid, peer in old.items():
            self._emit("peer_left", pid, {"name": peer.name, "reason": "rejoined"})
        if self._room_key is not None:
            result = dataclasses.replace(result, name=self.name)  # not the pseudonym
        self._enter_room(result, owed)
        if self._room_key is not None:
            await self._quietly(self._send_profile())  # sealed for the new id
        self._emit("signaling_restored", None, {"resumed": False, "room": result.room})

    def _resumed(self, result: JoinResult) -> None:
        """Back under our id: the join reply's roster is who is in the room now.

        Peers we knew that it lacks left while we were away (their ``peer_left``
        went to a connection we no longer had), unless our link to them is
        still open: after a server restart they may simply not be back yet,
        so they stay until their link closes or the server names them."""
        assert self._mesh is not None
        # fresh TURN credentials for the connections made from now on
        self._mesh.ice_servers = self._ice_servers + _ice_servers(result.ice_servers)
        roster = {peer.peer_id for peer in result.peers}
        for peer in result.peers:
            if peer.peer_id != self.peer_id:
                self._add_peer(peer)
        for pid in [p for p in self._peers if p not in roster]:
            link = self._mesh.links.get(pid)
            if link is not None and link.state in OPEN_STATES:
                self._unconfirmed.add(pid)
            else:
                self._on_peer_left(pid, "left")
        self._emit("signaling_restored", None, {"resumed": True, "room": result.room})

    @staticmethod
    async def _quietly(coro: Awaitable[Any]) -> None:
        try:
            await coro
        except P2PError as exc:
            log.info("%s", exc)

    def _on_peer_left(self, peer_id: str, reason: str) -> None:
        if self._hold(self._on_peer_left, peer_id, reason):
            return
        if reason in EJECTED_REASONS:
            self._ejected[peer_id] = None
            while len(self._ejected) > MAX_EJECTED:
                del self._ejected[next(iter(self._ejected))]
        if self._mesh is None or peer_id not in self._peers:
            return
        self._unconfirmed.discard(peer_id)
        peer = self._peers.pop(peer_id)
        if self._names is not None:  # a name it held may go to one refused it
            for other, name in self._names.forget(peer_id):
                self._rename(other, name)
        mesh = self._mesh

        async def drop() -> None:
            await mesh.remove_peer(peer_id)
            self._emit("peer_left", peer_id, {"name": peer.name, "reason": reason})

        assert self._tasks is not None
        self._tasks.spawn(drop(), f"drop-{peer_id}")

    def _on_signal(self, from_id: str, data: dict[str, Any]) -> None:
        if self._hold(self._on_signal, from_id, data):
            return
        if from_id in self._ejected:
            return
        if self._mesh is not None:
            self._mesh.handle_signal(from_id, data)

    def _on_signaling_lost(self) -> None:
        if self.room is not None and not self._away and not self._closed:
            # from now until the rejoin is handled, signaling events wait: the
            # events after a join reply may be handled before the reply itself
            self._away = True
            self._begin_hold()
        shutdown = self._signaling is not None and self._signaling.server_shutdown
        self._emit(
            "signaling_lost",
            None,
            {
                "message": (
                    "the signaling server shut down" if shutdown else "signaling connection lost"
                )
                + "; open links stay up, reconnecting (signaling_restored follows)",
                "reason": "server_shutdown" if shutdown else "connection_lost",
            },
        )

    async def _send_signal(self, peer_id: str, payload: dict[str, Any]) -> None:
        await self._require_signaling().signal(peer_id, payload)

    # ---------------------------------------------------------- mesh → events
    def _on_mesh_event(self, name: str, peer_id: str, data: Any) -> None:
        if name in ("control", "binary") and peer_id in self._ejected:
            log.info("dropped a frame from %s: the server put it out of the room", peer_id)
            return
        if name == "control":
            self._on_control(peer_id, data)
        elif name == "binary":
            try:
                self._require_transfers().on_chunk(peer_id, data)
            except (ProtocolError, SignalingError) as exc:
                self._emit("error", peer_id, ProtocolError(str(exc)))
        elif name == "undelivered":
            self._emit("undelivered", peer_id, self._undelivered(data))
        elif name == "peer_identified":
            # the same person as ``previous`` before our rebuild: its messages
            # sent again are dropped up to what we had
            previous = self._last_seq.get(str(data["previous"]), 0)  # still in this mesh
            last = max(self._last_seq.get(peer_id, 0), int(data["last_seq"]), previous)
            self._last_seq[peer_id] = last
        else:
            if name == "peer_state" and self._transfers is not None:
                # a relayed link carries transfers like a direct one
                new = "connected" if data["new"] == "relayed" else data["new"]
                self._transfers.on_peer_state(peer_id, new)
            self._emit(name, peer_id, data)
            if name == "peer_state" and data["new"] in OPEN_STATES and self._rekeying:
                self._rekeying.on_link_open(peer_id)  # a member back may lack our epoch
            if (
                name == "peer_state"
                and peer_id in self._unconfirmed
                and data["new"] not in OPEN_STATES
            ):
                self._on_peer_left(peer_id, "left")  # not in the roster, and now gone

    def _undelivered(self, data: dict[str, list[Any]]) -> dict[str, Any]:
        """What a lost link took with it, as the user's own chat messages."""

        def mine(frames: list[Any]) -> list[protocol.ChatMessage]:
            out = []
            for frame in frames:
                try:
                    msg = protocol.decode(frame) if isinstance(frame, str) else None
                except ProtocolError:
                    msg = None
                if isinstance(msg, protocol.ChatMessage):
                    out.append(
                        dataclasses.replace(msg, sender=self.peer_id or "", sender_name=self.name)
                    )
            return out

        messages = mine(data["frames"])
        return {
            "name": data["name"],
            "messages": messages,
            "unconfirmed": mine(data["unconfirmed"]),
            "other_frames": len(data["frames"]) - len(messages),
        }

    def _on_control(self, peer_id: str, msg: protocol.Message) -> None:
        if isinstance(msg, protocol.ChatMessage):
            if msg.to is not None and msg.to != self.peer_id:
                log.warning("message from %s addressed to %s, not us", peer_id, msg.to)
                return
            if not self._first_time(peer_id, msg.seq):
                return
            peer = self._peers.get(peer_id)
            received = protocol.ChatMessage(
                text=msg.text,
                seq=msg.seq,
                ts=msg.ts,
                id=msg.id,
                to=msg.to,
                sender=peer_id,
                sender_name=peer.name if peer else peer_id,
            )
            self._messages.append(received)
            self._emit("message", peer_id, received)
        elif isinstance(msg, protocol.FileOffer) and self._transfers is not None:
            self._transfers.on_offer(peer_id, msg)
        elif isinstance(msg, protocol.FileControl) and self._transfers is not None:
            self._transfers.on_control(peer_id, msg)
        elif isinstance(msg, protocol.CapabilitiesUpdate):
            self._set_remote_caps(peer_id, msg.capabilities.to_wire(), announce=True)
        elif isinstance(msg, protocol.UnknownMessage):
            if msg.seq is not None and not self._first_time(peer_id, msg.seq):
                return
            if msg.type == REKEY_TYPE and self._rekeying is not None:
                self._rekeying.on_message(peer_id, msg.payload)
            elif msg.type in self._custom_types:
                payload = {
                    k: v for k, v in msg.payload.items() if k not in protocol.CUSTOM_ENVELOPE
                }
                self._emit("custom_message", peer_id, CustomMessage(msg.type, peer_id, payload))
            else:
                self._emit("unknown_message", peer_id, msg)

    def __repr__(self) -> str:
        if self._closed:
            return f"<P2PApp {self.name!r} disconnected>"
        return (
            f"<P2PApp {self.name!r} peer_id={self.peer_id} room={self.room!r} "
            f"connected={len(self.connected_peers())}/{len(self.peers)}>"
        )


def run_blocking(app: P2PApp, awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Blocking twin for plain (non-async) code: ``run_blocking(app, app.send_message("hi"))``."""
    if app._net is None:
        raise RuntimeError("run_blocking needs an app created with thread=True")
    if app._closed or app._net.closed:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise AppClosed()

    async def wrap() -> T:
        return await awaitable

    return app._net.run_blocking(wrap(), timeout)


def _write_dataframe(df: pandas.DataFrame, path: Path, fmt: str, compression: str | None) -> None:
    if fmt == "parquet":
        df.to_parquet(path, engine="pyarrow", compression=compression, index=True)
    else:
        df.to_csv(path, index=True)


__all__ = [
    "Capabilities",
    "ConnectionQuality",
    "CustomMessage",
    "FileShare",
    "IncomingTransfer",
    "MeshSettings",
    "MeshValidation",
    "P2PApp",
    "PeerInfo",
    "ReceivedFile",
    "TransferError",
]
