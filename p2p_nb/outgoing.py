"""The sending half of one peer link: what leaves, in what order, in how many
data-channel messages, and what is kept until the peer confirms it.

Separate from :class:`~p2p_nb.peerlink.PeerLink` (which owns the connection
and its states) because its rules are about frames, not connections: batching
(aiortc's cost is per SCTP message), the bounded outbox of a link that is
down, and the copies of chat that survive a link failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import protocol
from .errors import PeerUnavailable, ProtocolError

if TYPE_CHECKING:
    from .peerlink import PeerLink

log = logging.getLogger(__name__)

MAX_OUTBOX = 1000
"""Messages held per peer while its link is opening or re-opening."""
MAX_UNACKED = 10_000
"""Chat frames a link keeps until the peer confirms them with a ``chat-ack``:
a link that fails loses what its data channel held, so these go again, first,
when it re-opens (the receiver drops any it had, by ``seq``)."""
ACK_DELAY = 0.05
"""A ``chat-ack`` joins the link's next batch of frames, or goes alone after
this many seconds: it never costs a data-channel message of its own ahead of,
or right behind, a reply, so round trips do not pay for it."""
BATCH_MAX_CHARS = 16_000
"""Text frames sent during one turn of the event loop leave together, joined by
newlines, in one data-channel message of at most this many characters (so at
most 64 000 bytes, under the 64 KiB message limit, whatever the script).
aiortc's cost is per SCTP message (its sender rescans every message in flight
on each acknowledgement), so a burst of chat costs one message instead of
hundreds. A frame sent on an idle link (nothing batched, nothing buffered)
leaves at once, so a lone message waits for nothing."""


@dataclass
class Owed:
    """What a link closed for a rebuild (our new peer id after a signaling
    restart) still owed its peer: the chat and application messages it never
    had confirmed, in order. They go again, first, to the link under the
    peer's new id that proves to be the same person: the same DTLS
    certificate (see :class:`~p2p_nb._aiortc.certificate.StableCertificate`),
    never merely the same name, which anyone may take once the server forgot
    the room."""

    peer_id: str
    """The peer's old id."""
    name: str
    fingerprint: str
    """The certificate fingerprint its direct connections showed."""
    frames: list[tuple[int, str]]
    """(seq, frame) not confirmed, oldest first."""
    last_seq: int = 0
    """The highest ``seq`` we had from it: what it sends again is dropped up to there."""


def readdress(frame: str, peer_id: str) -> str:
    """``frame`` addressed to ``peer_id`` if it was a direct chat message to
    the peer's old id (the receiver drops chat addressed to another id)."""
    try:
        msg = protocol.decode(frame)
    except ProtocolError:
        return frame
    if isinstance(msg, protocol.ChatMessage) and msg.to is not None:
        return dataclasses.replace(msg, to=peer_id).encode()
    return frame


class Outgoing:
    """Frames on their way to one peer (the link's ``out``)."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.outbox: deque[str | bytes] = deque()
        """Frames waiting for a channel to open (never sent)."""
        self.unacked: deque[tuple[int, str]] = deque(maxlen=MAX_UNACKED)
        """(seq, frame) of chat frames sent and not yet confirmed by the peer."""
        self.bytes_sent = 0
        self.messages_sent = 0
        self.frames_sent = 0
        """Data-channel messages (a batch of text frames counts once)."""
        self._batch: list[str] = []
        self._batch_chars = 0
        self._ack_due: int | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self._pongs: dict[str, asyncio.Future[None]] = {}
        """Pings of :meth:`drain` waiting for their pong, by id."""

    def _open(self) -> bool:
        channel = self.link.channel
        return channel is not None and channel.readyState == "open"

    # ------------------------------------------------------------- sending
    def send(self, data: str | bytes, seq: int | None = None) -> None:
        """Send now, or queue (bounded) while the link is opening or re-opening.

        A chat frame comes with its ``seq``: it is kept until the peer confirms
        it, and sent again if the link fails first (see :data:`MAX_UNACKED`)."""
        link = self.link
        is_open = self._open()
        if not is_open and link.state in ("closed", "lost", "limited"):
            reason = f" ({link.limited_reason})" if link.limited_reason else ""
            raise PeerUnavailable(f"link to peer {link.peer_id} is {link.state}{reason}")
        if not is_open and len(self.outbox) >= MAX_OUTBOX:
            raise PeerUnavailable(
                f"peer {link.peer_id} is {link.state} and {MAX_OUTBOX} messages are queued"
            )
        if seq is not None and isinstance(data, str):
            self.unacked.append((seq, data))
        if is_open:
            self.transmit(data)
        else:
            self.outbox.append(data)
        if self._ack_due is not None and self._batch:
            self._send_ack()  # joins the batch this frame is in

    def transmit(self, data: str | bytes) -> None:
        """Hand one frame to the open channel: text joins this loop turn's batch
        (see :data:`BATCH_MAX_CHARS`); anything else goes after the batch, so
        the order of every frame is kept."""
        channel = self.link.channel
        assert channel is not None
        if isinstance(data, str) and len(data) < BATCH_MAX_CHARS:
            if not self._batch and channel.bufferedAmount == 0:
                self._send_frame(data, 1)  # an idle link: no reason to wait
                return
            if self._batch_chars + len(data) >= BATCH_MAX_CHARS:
                self.send_batch()
            if not self._batch:
                asyncio.get_running_loop().call_soon(self.send_batch)
            self._batch.append(data)
            self._batch_chars += len(data) + 1
        else:
            self.send_batch()
            self._send_frame(data, 1)

    def send_batch(self) -> None:
        """The batch of this loop turn leaves now (or waits in the outbox if
        the channel went away meanwhile)."""
        if not self._batch:
            return
        batch = self._batch
        self._batch, self._batch_chars = [], 0
        if not self._open():
            self.outbox.extendleft(reversed(batch))  # sent again when a channel opens
            return
        self._send_frame(batch[0] if len(batch) == 1 else "\n".join(batch), len(batch))

    def _send_frame(self, data: str | bytes, messages: int) -> None:
        channel = self.link.channel
        assert channel is not None
        channel.send(data)
        self.frames_sent += 1
        self.bytes_sent += len(data)
        self.messages_sent += messages

    # ---------------------------------------------------- channel changes
    def on_open(self) -> None:
        """A channel opened: unconfirmed chat a previous channel took goes
        first, then the outbox (frames never sent) in its own order."""
        queued = {id(frame) for frame in self.outbox}
        again = [frame for _, frame in self.unacked if id(frame) not in queued]
        if again:
            log.info("link %s: %d unconfirmed messages go again", self.link.peer_id, len(again))
            self.outbox.extendleft(reversed(again))
        while self.outbox:
            self.transmit(self.outbox.popleft())

    def on_drop(self, held: list[str | bytes]) -> None:
        """The channel failed: the unsent batch, then ``held`` (what a relay
        had not passed on), go back to the front of the outbox, in order;
        frames that only mean something on the channel they were made for
        (pings, pongs, acks, reports, a safety reveal, a relay-open) are
        dropped: the next channel makes its own."""
        batch = [f for f in self._batch if not _per_channel(f)]
        self._batch, self._batch_chars = [], 0
        self.outbox.extendleft(reversed(batch))
        self.outbox.extendleft(reversed([f for f in held if not _per_channel(f)]))

    def take_undelivered(self) -> tuple[list[str | bytes], list[str]]:
        """The link is gone for good: what never left, and the chat that left
        but was never confirmed (it may or may not have arrived)."""
        self.on_drop([])
        never_sent = list(self.outbox)
        queued = {id(frame) for frame in never_sent}
        unconfirmed = [frame for _, frame in self.unacked if id(frame) not in queued]
        self.outbox.clear()
        self.unacked.clear()
        return never_sent, unconfirmed

    def take_owed(self) -> list[tuple[int, str]]:
        """The link closes for a rebuild: the sequenced frames never confirmed
        (sent or not), oldest first; everything else it held is dropped (it
        belonged to the old membership: transfers end with it)."""
        self.on_drop([])
        owed = list(self.unacked)
        self.outbox.clear()
        self.unacked.clear()
        return owed

    def resend(self, owed: Owed) -> None:
        """Frames a previous link to the same person never had confirmed go
        first when this one opens (called just before :meth:`on_open`), kept
        until this peer confirms them."""
        have = {seq for seq, _ in self.unacked}  # broadcasts queued here meanwhile
        frames = [
            (seq, readdress(frame, self.link.peer_id))
            for seq, frame in owed.frames
            if seq not in have
        ]
        queued = {id(frame) for frame in self.outbox}
        later = [(seq, frame) for seq, frame in self.unacked if id(frame) in queued]
        sent = [(seq, frame) for seq, frame in self.unacked if id(frame) not in queued]
        self.unacked = deque([*frames, *sent, *later], maxlen=MAX_UNACKED)
        self.outbox.extendleft(reversed([frame for _, frame in frames]))
        log.info(
            "link %s: %d messages owed to %s (was %s) go again",
            self.link.peer_id,
            len(frames),
            owed.name,
            owed.peer_id,
        )

    async def drain(self, timeout: float) -> None:
        """Before we close this link on purpose (leaving the room): what we owe
        leaves now and what we sent is settled, so neither side reports
        messages that "may not have arrived" after a clean exchange.

        The ``chat-ack`` still waiting for its :data:`ACK_DELAY` timer goes at
        once, followed by a ``ping``: its ``pong`` comes back on the same
        ordered channel, so when it is here the peer has read our ack. Then we
        wait (within ``timeout``, in all) for the peer's acks of our own chat.
        A link that is not open, or a peer that does not answer, costs at most
        ``timeout``."""
        if not self._open():
            return
        self._send_ack()
        ping_id = uuid.uuid4().hex[:16]
        pong = asyncio.get_running_loop().create_future()
        self._pongs[ping_id] = pong
        try:
            self.send(protocol.Ping(id=ping_id, ts=time.time()).encode())
            self.send_batch()
            async with asyncio.timeout(timeout):
                # woken by the pong, every ack and every state change (a peer
                # that closes first ends the wait at once)
                while self._open() and (not pong.done() or self.unacked):
                    wake = self.link._wake
                    await wake.wait()
        except (TimeoutError, PeerUnavailable) as exc:
            log.info("link %s: not settled before closing (%r)", self.link.peer_id, exc)
        finally:
            self._pongs.pop(ping_id, None)

    def on_pong(self, ping_id: str) -> None:
        """A ``pong``: the peer has read everything we sent before its ``ping``."""
        waiter = self._pongs.pop(ping_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            self.link._notify()

    def close(self) -> None:
        """Closing: what was sent before still leaves, with the ack we owe (the
        peer would otherwise count its last messages as maybe lost); no acks
        after this."""
        if self._open():
            self._send_ack()
            self.send_batch()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._ack_due = None

    # -------------------------------------------------------- chat acks
    def acked(self, seq: int) -> None:
        """The peer has every chat frame up to ``seq``."""
        while self.unacked and self.unacked[0][0] <= seq:
            self.unacked.popleft()
        self.link._notify()

    def ack_later(self, seq: int) -> None:
        """Confirm chat up to ``seq`` soon (see :data:`ACK_DELAY`): one
        ``chat-ack`` covers every message received until then."""
        if self._ack_due is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)
        self._ack_due = max(seq, self._ack_due or 0)

    def _send_ack(self) -> None:
        seq, self._ack_due = self._ack_due, None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if seq is not None:
            with contextlib.suppress(PeerUnavailable):
                self.send(protocol.ChatAck(seq).encode())


_PER_CHANNEL = tuple(
    f'{{"v":{protocol.PROTOCOL_VERSION},"type":"{kind}"'
    for kind in ("ping", "pong", "chat-ack", "mesh-report", "safety-reveal", "relay-open")
)


def _per_channel(frame: str | bytes) -> bool:
    """A frame of the link's own upkeep (every encoder writes ``v`` and ``type`` first)."""
    return isinstance(frame, str) and frame.startswith(_PER_CHANNEL)
