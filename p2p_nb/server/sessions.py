"""Sessions that must end: a revoked or expired invite takes its connections out.

Ending a session is more than a Socket.IO namespace DISCONNECT: that leaves the
engine.io transport open, and a client may send a namespace CONNECT on it
again (the Jupyter adapter then used to admit it on the identity it cached at
the upgrade). So :func:`end_session` takes the peer out of its room at once
(``peer_left`` with the reason, no grace period: it is not coming back), tells
the client why (``session_ended``), disconnects the namespace and then closes
the transport itself, whatever the client does.

Invites carry an expiry. :class:`SessionEnds` holds one timer per session that
has one and ends it then; every request is checked too (:meth:`SessionEnds.why_over`),
so a clock that jumps (or a timer that fires late) leaves no window. The timers
and the tasks they start belong to it and stop with :meth:`SessionEnds.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import socketio

from .auth import Identity

if TYPE_CHECKING:
    from .core import SignalingService

log = logging.getLogger(__name__)

REASONS = {
    "revoked": "your invite was revoked by the member who made it",
    "expired": "your invite expired",
}
"""Why a session ends (``session_ended.reason``, ``peer_left.reason``) and
what the client is told (``session_ended.message``)."""


async def close_transport(eio: Any, eio_sid: str) -> None:
    """Close one engine.io connection for good: its close packet goes out
    after what is queued, then the WebSocket closes, even if the client
    ignores the close packet and keeps sending (it is never read again)."""
    sock = eio.sockets.pop(eio_sid, None)
    if sock is None:
        return
    await sock.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
    # The writer sends what is queued, then this None ends it and it closes
    # the WebSocket; the reader loop sees the close and stops.
    sock.queue.put_nowait(None)


async def end_session(service: SignalingService, sid: str, reason: str) -> None:
    """Take ``sid`` out: its room hears it left (``reason``), it hears why,
    its namespace and its transport close."""
    peer = service.peers.get(sid)
    if peer is None:
        return
    sio = service.sio
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    await service.remove(sid, reason)
    with contextlib.suppress(socketio.exceptions.SocketIOError):
        await sio.emit("session_ended", {"reason": reason, "message": REASONS[reason]}, to=sid)
    await sio.disconnect(sid)
    if eio_sid is not None:
        await close_transport(sio.eio, eio_sid)
    log.info("session %s of %s ended: %s", sid, peer.identity, reason)


class SessionEnds:
    """Ends the sessions of invites that expire or are revoked.

    ``clock`` is the invite book's (UNIX seconds), so a test that moves it
    moves expiries too; timers are scheduled on the running loop for the time
    left by that clock and look again when they fire.
    """

    def __init__(self, service: SignalingService, clock: Callable[[], float]) -> None:
        self._service = service
        self._clock = clock
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """sid → the task ending it (one per session, however many requests come)."""

    def why_over(self, identity: Identity) -> str | None:
        """``"revoked"`` or ``"expired"`` if ``identity`` no longer admits, else None."""
        if identity.kind == "invite" and self._service.invites.is_revoked(identity.subject):
            return "revoked"
        if identity.expires is not None and self._clock() >= identity.expires:
            return "expired"
        return None

    def watch(self, sid: str, expires: float | None) -> None:
        """End ``sid`` at ``expires`` (None: never)."""
        self.forget(sid)
        if expires is None:
            return
        delay = max(0.0, expires - self._clock())
        self._timers[sid] = asyncio.get_running_loop().call_later(delay, self._due, sid, expires)

    def forget(self, sid: str) -> None:
        """``sid`` is gone: its timer too."""
        timer = self._timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def _due(self, sid: str, expires: float) -> None:
        self._timers.pop(sid, None)
        if self._clock() < expires:  # the clock was set back: not yet
            self.watch(sid, expires)
            return
        self.end(sid, "expired")

    def end(self, sid: str, reason: str) -> None:
        """End ``sid`` soon, in a task of ours (after the reply in hand goes out)."""
        self.forget(sid)
        if sid in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            end_session(self._service, sid, reason), name=f"end-session-{sid}"
        )
        self._tasks[sid] = task
        task.add_done_callback(lambda done: self._done(sid, done))

    def _done(self, sid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(sid) is task:
            del self._tasks[sid]
        if not task.cancelled() and task.exception() is not None:
            log.error("ending session %s failed", sid, exc_info=task.exception())

    def close(self) -> None:
        """Stop every timer and every ending under way (the service shuts down)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks.values():
            task.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the cancelled endings have stopped."""
        self.close()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
