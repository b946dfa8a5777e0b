"""The network thread: an asyncio loop of its own for signaling and aiortc.

A notebook cell that blocks for 40 s starves the kernel's loop; aioice gives up
after ~30 s without consent replies and the signaling server drops a silent
client after 45 s. On a loop in its own daemon thread the mesh keeps answering
while cells run (see FIELD-NOTES.md, "asyncio in ipykernel").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import AppClosed, P2PTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class NetworkThread:
    def __init__(self, name: str = "p2p-nb-network") -> None:
        self.loop = _new_loop()
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def closed(self) -> bool:
        """Stopped (or stopping): nothing handed over now would ever run."""
        return self._stopping or self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the network loop; :class:`AppClosed` once it is
        stopped (not asyncio's ``RuntimeError("Event loop is closed")``)."""
        if self.closed:
            coro.close()
            raise AppClosed()
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # closed between the check and the call
            coro.close()
            raise AppClosed() from None

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """``fn()`` run on the network loop, its result handed back to this thread.

        Reading the mesh's dicts from another thread can hit "dictionary
        changed size during iteration" (or a half-made change): a read that
        hops here sees state between two steps of the loop, never during one.
        On the network thread itself it simply runs."""
        if self.is_current:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        if self.closed:
            raise AppClosed()
        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise AppClosed() from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            if self.closed:
                raise AppClosed() from None
            raise P2PTimeoutError(f"the network thread did not answer within {timeout}s") from None

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the network loop from whatever loop we are on."""
        if self.is_current:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.is_current:
            coro.close()
            raise RuntimeError("blocking call from the network thread would deadlock")
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        self._stopping = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.is_current:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("network thread did not stop within %ss", timeout)
