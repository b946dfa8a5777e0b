"""A link's worker survives whatever signals arrive, and an answerer that is
offered again while open goes through ``reconnecting`` like any failed link."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_nb.app import P2PApp
from p2p_nb.peerlink import PeerLink

from .conftest import MakePeer
from .test_mesh import wait_mesh
from .test_transfer import make_file, sha

pytestmark = pytest.mark.anyio


def roles(a: P2PApp, b: P2PApp) -> tuple[P2PApp, P2PApp]:
    """(offerer, answerer): the smaller peer id offers."""
    return (a, b) if (a.peer_id or "") < (b.peer_id or "") else (b, a)


def link(app: P2PApp, other: P2PApp) -> PeerLink:
    return app._mesh.link(other.peer_id or "")  # type: ignore[union-attr]


async def test_a_stale_answer_does_not_end_the_link_worker(make_peer: MakePeer) -> None:
    """A duplicate answer (aiortc raises InvalidStateError for it, had it been
    applied) is dropped; the worker goes on and a later cut still heals."""
    offerer, answerer = roles(await make_peer("ana"), await make_peer("ben"))
    await wait_mesh([offerer, answerer])
    theirs = link(offerer, answerer)
    assert theirs.pc is not None
    old = theirs.pc.remoteDescription
    errors = offerer.events("error")
    for signal in (
        {"type": "answer", "sdp": old.sdp},  # no attempt tag: a revision-1 duplicate
        {"type": "answer", "sdp": old.sdp, "attempt": "0" * 16},  # an older attempt
        {"type": "offer", "sdp": old.sdp},  # out of place: the offerer never answers
    ):
        theirs.signals.put_nowait(signal)
    reconnected = offerer.events("peer_connected")
    await theirs.cut()
    assert (await reconnected.get(timeout=20)).peer_id == answerer.peer_id
    inbox = answerer.events("message")
    await offerer.send_message("still here")
    assert (await inbox.get(timeout=10)).data.text == "still here"
    reported = [e.data for e in errors.drain()]
    assert any("unexpected 'offer'" in str(e) for e in reported)


async def test_an_answerer_offered_again_while_open_reconnects_and_its_transfer_resumes(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    """The offerer starts over on a link the answerer still thinks open: the
    answerer's link says ``reconnecting`` then ``connected``, and a file the
    answerer was sending arrives whole, instead of stalling."""
    a = await make_peer("ana", download_dir=tmp_path / "a")
    b = await make_peer("ben", download_dir=tmp_path / "b")
    await wait_mesh([a, b])
    offerer, answerer = roles(a, b)
    states = answerer.events("peer_state")
    src = tmp_path / "big.bin"
    digest = make_file(src, 20_000_000)
    incoming = offerer.events("file_offer", "file_received", "file_progress")
    await answerer.share_file(src)
    await (await incoming.wait_for("file_offer", timeout=10)).data.accept()
    await incoming.wait_for("file_progress", timeout=20)
    # the offerer's side of the path goes silent (its old connection is left
    # alone, so the answerer notices nothing) and it starts over with a new offer
    theirs = link(offerer, answerer)
    silent, theirs.pc = theirs.pc, None
    assert silent is not None
    try:
        theirs._attempt_failed(theirs.generation, "path went silent")
        got = await incoming.wait_for("file_received", timeout=45)
    finally:
        await silent.close()
    assert sha(got.data.path) == digest
    seen = [e.data["new"] for e in states.drain() if e.peer_id == offerer.peer_id]
    assert seen[:2] == ["reconnecting", "connected"]
