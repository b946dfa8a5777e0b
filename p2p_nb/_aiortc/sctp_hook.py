"""What every hook into aiortc's SCTP association shares.

Why this module exists: each SCTP patch (tail-loss probe, loss-tolerant
window, quick transmit, delayed SACK) replaces methods on one association
instance, must be installed at most once per association, must check first
that the internals it needs are there (and otherwise stay off, with one
warning per process saying what is lost), and sends from timer callbacks
whose failures must not escape. That is written once, here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)


class SctpHook:
    """What every hook into aiortc's SCTP association has: the internals it
    needs, and the sends it starts from timers."""

    _NEEDS: tuple[str, ...] = ()
    _warned = False

    def __init__(self, sctp: Any) -> None:
        self._sctp = sctp
        self._tasks: set[asyncio.Future[None]] = set()

    @classmethod
    def missing(cls, sctp: Any) -> list[str]:
        """The internals this aiortc lacks (empty: the hook can be installed)."""
        return [name for name in cls._NEEDS if not hasattr(sctp, name)]

    def _spawn(self, send: Awaitable[None], what: str) -> None:
        """Run ``send`` from a timer callback, kept until done; a failure (the
        association closed meanwhile) is only logged."""
        task = asyncio.ensure_future(send)
        self._tasks.add(task)

        def done(task: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s failed: %r", what, task.exception())

        task.add_done_callback(done)


_Hook = TypeVar("_Hook", bound=SctpHook)


def install_once(cls: type[_Hook], pc: RTCPeerConnection, attr: str, without: str) -> _Hook | None:
    """``cls``'s hooks on ``pc``'s SCTP association, made once and kept in
    ``attr``; ``None`` (and one warning per class and process, saying what is
    lost ``without`` them) if aiortc's internals moved."""
    sctp = getattr(pc, "sctp", None)
    if sctp is None:
        return None
    existing = getattr(sctp, attr, None)
    if isinstance(existing, cls):
        return existing
    missing = cls.missing(sctp)
    if missing:
        if not cls._warned:
            cls._warned = True
            log.warning(
                "aiortc's SCTP lacks %s: %s; p2p_nb/_aiortc must follow this aiortc",
                ", ".join(missing),
                without,
            )
        return None
    hooks = cls(sctp)
    setattr(sctp, attr, hooks)
    return hooks
