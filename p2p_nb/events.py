"""The app's event stream, safe to consume from any thread's event loop.

The mesh runs on the network thread, notebooks consume on the kernel's loop and
widget callbacks may come from a comm subshell: each subscriber remembers the
loop it was created on and receives events there via ``call_soon_threadsafe``
(``Queue.put_nowait`` from a foreign thread would not wake that loop).

The bus holds its streams by weak reference: a stream nobody refers to any
more (``await app.events("message").get()``, a loop that ``break``s out of
``async for ev in app.events()``) is gone with its buffer, instead of queueing
up to :data:`MAX_QUEUED_EVENTS` events for ever.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import P2PTimeoutError

log = logging.getLogger(__name__)

EVENT_NAMES = (
    "joined",
    "peer_joined",
    "peer_state",
    "peer_connected",
    "peer_reconnecting",
    "peer_lost",
    "peer_left",
    "peer_updated",
    "undelivered",
    "message",
    "message_sent",
    "custom_message",
    "unknown_message",
    "quality",
    "file_offer",
    "file_progress",
    "file_received",
    "file_sent",
    "transfer_interrupted",
    "transfer_failed",
    "signaling_lost",
    "signaling_restored",
    "room_rekeyed",
    "error",
    "disconnected",
)
MAX_QUEUED_EVENTS = 10_000
"""Events held for a subscriber that is not reading; older ones are dropped beyond this."""


@dataclass(frozen=True)
class Event:
    """Something that happened in the room. ``data`` depends on ``name``
    (a :class:`~p2p_nb.protocol.ChatMessage` for ``message``, an exception for
    ``error``, a dict otherwise)."""

    name: str
    peer_id: str | None = None
    data: Any = None
    ts: float = field(default_factory=time.time)


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class EventStream:
    """An async iterator over events, subscribed from the moment it is created
    until it is closed (``close()``, ``aclose()``, the end of ``with``/``async
    with``) or no longer referenced."""

    def __init__(self, bus: EventBus, names: frozenset[str]) -> None:
        loop = _current_loop()
        if loop is None:
            raise RuntimeError("events() needs a running event loop (call it from async code)")
        self._loop = loop
        self._bus = bus
        self._names = names
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.dropped = 0
        self.closed = False

    def _deliver(self, event: Event) -> None:
        if self.closed or (self._names and event.name not in self._names):
            return
        if _current_loop() is self._loop:
            self._put(event)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: Event) -> None:
        if self._queue.qsize() >= MAX_QUEUED_EVENTS:
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("event stream not read: dropping oldest events")
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def get(self, timeout: float | None = None) -> Event:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise P2PTimeoutError(f"no event within {timeout}s") from None

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[Event], bool] | None = None,
        *,
        timeout: float = 30.0,
    ) -> Event:
        """The next event called ``name`` (matching ``predicate``); others are skipped."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self._queue.get()
                    if event.name == name and (predicate is None or predicate(event)):
                        return event
        except TimeoutError:
            raise P2PTimeoutError(f"no {name!r} event within {timeout}s") from None

    def drain(self) -> list[Event]:
        """Every event already queued, without waiting."""
        events = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def close(self) -> None:
        """No more events: the stream leaves the bus (what is queued stays readable)."""
        self.closed = True
        self._bus._unsubscribe(self)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


Handler = Callable[[Event], Any]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[weakref.ref[EventStream]] = []
        """Weak: a stream the program dropped must not keep buffering."""
        self._handlers: list[tuple[str, Handler, asyncio.AbstractEventLoop | None]] = []
        self._pending: set[Any] = set()

    def stream(self, names: frozenset[str]) -> EventStream:
        stream = EventStream(self, names)
        with self._lock:
            self._streams.append(weakref.ref(stream))
        return stream

    def _unsubscribe(self, stream: EventStream) -> None:
        with self._lock:
            self._streams = [r for r in self._streams if r() not in (None, stream)]

    def _live_streams(self) -> list[EventStream]:
        """Streams still referenced (dead ones are forgotten here); call with the lock."""
        live = [s for s in (r() for r in self._streams) if s is not None]
        if len(live) != len(self._streams):
            self._streams = [weakref.ref(s) for s in live]
        return live

    @property
    def stream_count(self) -> int:
        """Streams subscribed now (dropped ones no longer count)."""
        with self._lock:
            return len(self._live_streams())

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` for each ``name`` event ("*" for all) on the
        loop that registered it; returns a function that unregisters it."""
        entry = (name, handler, _current_loop())
        with self._lock:
            self._handlers.append(entry)

        def off() -> None:
            with self._lock:
                if entry in self._handlers:
                    self._handlers.remove(entry)

        return off

    def emit(self, event: Event) -> None:
        with self._lock:
            streams = self._live_streams()
            handlers = [h for h in self._handlers if h[0] in (event.name, "*")]
        for stream in streams:
            stream._deliver(event)
        for _, handler, loop in handlers:
            self._call(handler, loop, event)

    def _call(self, handler: Handler, loop: asyncio.AbstractEventLoop | None, event: Event) -> None:
        def invoke() -> None:
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._pending.add(task)
                    task.add_done_callback(self._handler_done)
            except Exception:
                log.exception("event handler %r failed on %s", handler, event.name)

        if loop is None or loop is _current_loop():
            invoke()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(invoke)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async event handler failed", exc_info=task.exception())
