"""Delayed acknowledgements for aiortc's SCTP (see :class:`DelayedSack`).

Why this module exists: aiortc sends a SACK for every packet of data, so on a
file transfer half the packets are acknowledgements, each built, encrypted,
sent and processed; RFC 9260 allows one for every second packet. It hooks
the association's private ``_send_sack``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .sctp_hook import SctpHook, install_once

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection


class DelayedSack(SctpHook):
    """Acknowledge every second packet of data, not every one.

    aiortc's SCTP sends a SACK for every packet that carries data: on a file
    transfer half the packets on the path are acknowledgements, each one
    built, encrypted and sent by the receiver (py-spy: ~22 % of a receiving
    kernel's CPU) and decrypted and processed by the sender. RFC 9260
    (section 6.2) asks for a SACK for at least every second packet, and
    within 200 ms of the first unacknowledged one. So a SACK goes out at once
    on the second packet, or when the packet reveals a gap or a duplicate
    (fast retransmit depends on those), and otherwise at most :attr:`DELAY`
    later: a lone packet (a chat message) is acknowledged 2 ms later, far
    below the sender's tail-loss probe (at least 20 ms) and T3 timer (1 s).
    (Sending the SACK once the packets already read were handled was tried
    first: the receiver drains its queue between most packets, so that
    saved nothing.) The sender's slow start grows by one packet per SACK,
    so it is slower from a link's first transfer on (1.5 times instead of twice per
    round trip), as with any peer that delays its acknowledgements."""

    EVERY = 2
    DELAY = 0.002
    """At most this long (seconds) between a packet and its SACK."""
    _NEEDS = ("_send_sack", "_sack_needed", "_sack_misordered", "_sack_duplicates", "_loop")

    def __init__(self, sctp: Any) -> None:
        super().__init__(sctp)
        self._owed = 0
        self._timer: asyncio.TimerHandle | None = None
        self.packets = 0
        """Packets received that asked for a SACK."""
        self.sacks = 0
        """SACKs sent."""
        self.deferred = 0
        """Packets whose SACK waited for the next packet or the timer."""
        send_sack = sctp._send_sack

        async def _send_sack() -> None:
            self.packets += 1
            self._owed += 1
            if self._owed >= self.EVERY or sctp._sack_misordered or sctp._sack_duplicates:
                await self._send_now(send_sack)
                return
            self.deferred += 1
            # One timer at a time, not cancelled by a SACK sent meanwhile: it
            # may fire early for a later packet (harmless), never late.
            if self._timer is None:
                self._timer = sctp._loop.call_later(self.DELAY, self._expired, send_sack)

        sctp._send_sack = _send_sack

    @classmethod
    def install(cls, pc: RTCPeerConnection) -> DelayedSack | None:
        """The SACK policy of ``pc``'s SCTP association (made once); ``None``
        (and one warning per process) if aiortc's internals moved."""
        return install_once(cls, pc, "_p2p_nb_delayed_sack", "a SACK for every packet")

    async def _send_now(self, send_sack: Callable[[], Awaitable[None]]) -> None:
        self._owed = 0
        self.sacks += 1
        await send_sack()

    def _expired(self, send_sack: Callable[[], Awaitable[None]]) -> None:
        self._timer = None
        if not (self._owed and self._sctp._sack_needed):
            return
        self._spawn(self._send_now(send_sack), "delayed SACK: send")
