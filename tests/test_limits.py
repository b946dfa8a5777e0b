"""What a hostile room member can make a receiver hold (p2p_nb/quota.py):
offers, transfers in progress, disk space, memory of old transfers, and the
size of a DataFrame read back. Real peers on loopback; the hostile side sends
raw protocol messages where a well-behaved app would not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from p2p_nb import protocol
from p2p_nb.app import P2PApp
from p2p_nb.errors import DataFrameTooLarge, TransferLimitError
from p2p_nb.events import EventStream
from p2p_nb.transfer import IncomingTransfer

from .conftest import MakePeer
from .test_mesh import wait_mesh
from .test_transfer import make_file, pair, sha

pytestmark = pytest.mark.anyio


def raw_offer(sender: P2PApp, to: str, size: int, name: str = "stall.bin") -> str:
    """An offer with no file behind it: once accepted, it never sends a byte
    (a transfer that holds a part file open for ever)."""
    offer = protocol.FileOffer(id=protocol.new_transfer_id(), name=name, size=size, sha256="0" * 64)
    sender._mesh.send(to, offer.encode())  # type: ignore[union-attr]
    return offer.id


async def settled(sender: P2PApp, receiver: P2PApp, inbox: EventStream) -> None:
    """Until the receiver has handled everything ``sender`` sent it so far
    (one ordered channel: a chat message sent now arrives after all of it)."""
    assert receiver.peer_id is not None
    await sender.send_message("barrier", to=receiver.peer_id)
    await inbox.wait_for("message", timeout=10)


async def stalled(a: P2PApp, b: P2PApp, offers: EventStream, n: int) -> list[IncomingTransfer]:
    """``n`` transfers from ``a`` that ``b`` accepted and that never progress."""
    assert b.peer_id is not None
    held = []
    for _ in range(n):
        raw_offer(a, b.peer_id, 1000)
        offer = (await offers.wait_for("file_offer", timeout=10)).data
        await offer.accept()
        held.append(offer)
    return held


async def test_pending_offers_per_peer_are_capped(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path)
    b.transfer_settings.max_pending_offers_per_peer = 2
    errors, fails_a = b.events("error"), a.events("transfer_failed")
    sources = [tmp_path / f"f{i}.bin" for i in range(3)]
    digests = [make_file(p, 100_000 + i) for i, p in enumerate(sources)]
    shares = [await a.share_file(p) for p in sources]
    refused = await fails_a.get(timeout=10)
    assert refused.data["name"] == "f2.bin"
    assert refused.data["reason"] == (
        "declined by ben: too many pending offers from you (2; the receiver's limit is 2)"
    )
    error = (await errors.get(timeout=10)).data
    assert isinstance(error, TransferLimitError)
    assert error.limit == "max_pending_offers_per_peer"
    assert "'f2.bin' from ana" in str(error)
    assert await shares[2].wait(timeout=5) == {b.peer_id: "declined"}
    # the offers already pending are untouched and arrive whole
    assert sorted(o.name for o in b.offers) == ["f0.bin", "f1.bin"]
    got = b.events("file_received")
    for offer in b.offers:
        await offer.accept()
    saved = {(await got.get(timeout=30)).data.path.name for _ in range(2)}
    assert saved == {"f0.bin", "f1.bin"}
    for name, digest in zip(["f0.bin", "f1.bin"], digests, strict=False):
        assert sha(tmp_path / "b" / name) == digest


async def test_pending_offers_overall_are_capped(make_peer: MakePeer, tmp_path: Path) -> None:
    a = await make_peer("ana", download_dir=tmp_path / "a")
    c = await make_peer("cleo", download_dir=tmp_path / "c")
    b = await make_peer("ben", download_dir=tmp_path / "b")
    await wait_mesh([a, b, c])
    b.transfer_settings.max_pending_offers = 2
    offers, errors = b.events("file_offer"), b.events("error")
    src = tmp_path / "x.bin"
    make_file(src, 1000)
    await a.share_file(src, to=b.peer_id)
    await offers.get(timeout=10)
    await c.share_file(src, to=b.peer_id)
    await offers.get(timeout=10)
    fails_a = a.events("transfer_failed")
    share = await a.share_file(src, to=b.peer_id)
    reason = (await fails_a.get(timeout=10)).data["reason"]
    assert reason == "declined by ben: too many pending offers (2; the receiver's limit is 2)"
    assert (await errors.get(timeout=10)).data.limit == "max_pending_offers"
    assert await share.wait(timeout=5) == {b.peer_id: "declined"}
    assert len(b.offers) == 2


async def test_transfers_in_progress_per_peer_are_capped(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b = await pair(make_peer, tmp_path)
    b.transfer_settings.max_active_per_peer = 2
    offers, inbox = b.events("file_offer"), b.events("message", "file_received")
    held = await stalled(a, b, offers, 2)
    assert [t.state for t in held] == ["receiving", "receiving"]
    # a third, accepted by hand: refused here, and still pending for later
    assert b.peer_id is not None
    raw_offer(a, b.peer_id, 1000)
    third = (await offers.wait_for("file_offer", timeout=10)).data
    with pytest.raises(TransferLimitError, match=r"from you in progress \(2; .* limit is 2\)") as e:
        await third.accept()
    assert e.value.limit == "max_active_per_peer"
    assert b.offers == [third]
    # an auto-accepted file waits for a slot instead of opening a third file
    b.set_auto_accept(1 << 20)
    src = tmp_path / "queued.bin"
    digest = make_file(src, 200_000)
    share = await a.share_file(src, to=b.peer_id)
    queued = (await offers.wait_for("file_offer", timeout=10)).data
    await settled(a, b, inbox)
    assert queued.state == "offered"
    assert len([p for p in (tmp_path / "b").iterdir() if p.name.endswith(".part")]) == 2
    # a slot frees: the waiting offer starts and arrives whole
    await held[0].cancel("stalled")
    got = await inbox.wait_for("file_received", timeout=30)
    assert sha(got.data.path) == digest
    assert await share.wait(timeout=10) == {b.peer_id: "done"}
    assert third.state == "offered"  # not auto-accepted: it waits for the user


async def test_transfers_in_progress_overall_are_capped(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a = await make_peer("ana", download_dir=tmp_path / "a")
    c = await make_peer("cleo", download_dir=tmp_path / "c")
    b = await make_peer("ben", download_dir=tmp_path / "b")
    await wait_mesh([a, b, c])
    b.transfer_settings.max_active = 1
    offers, inbox = b.events("file_offer"), b.events("message", "file_received")
    held = await stalled(a, b, offers, 1)
    src = tmp_path / "from_cleo.bin"
    digest = make_file(src, 100_000)
    share = await c.share_file(src, to=b.peer_id)
    offer = (await offers.wait_for("file_offer", timeout=10)).data
    overall = r"too many transfers in progress \(1; .* limit is 1\)"
    with pytest.raises(TransferLimitError, match=overall) as e:
        await offer.accept()
    assert e.value.limit == "max_active"
    b.set_auto_accept(1 << 20)
    share2 = await c.share_file(src, to=b.peer_id, name="second.bin")
    await offers.wait_for("file_offer", timeout=10)
    await settled(c, b, inbox)
    assert len(b.offers) == 2
    await held[0].cancel("stalled")
    got = await inbox.wait_for("file_received", timeout=30)
    assert got.data.name == "second.bin"
    assert sha(got.data.path) == digest
    assert await share2.wait(timeout=10) == {b.peer_id: "done"}
    assert offer.state == "offered"
    await offer.accept()  # a slot is free now
    assert sha((await inbox.wait_for("file_received", timeout=30)).data.path) == digest
    assert await share.wait(timeout=10) == {b.peer_id: "done"}


async def test_disk_space_is_reserved_across_transfers(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path)
    (tmp_path / "b").mkdir()
    gib = 2**30
    free = shutil.disk_usage(tmp_path / "b").free
    if free < 12 * gib:
        pytest.skip("needs 12 GiB free to pretend-fill 10 of them")
    # pretend only ~10 GiB are free for us; other processes may change the
    # real figure by a little, not by gigabytes
    b.transfer_settings.keep_free_bytes = free - 10 * gib
    offers, errors = b.events("file_offer"), b.events("error")
    assert b.peer_id is not None
    raw_offer(a, b.peer_id, 6 * gib, name="first.bin")
    first = (await offers.get(timeout=10)).data
    await first.accept()  # fits: 6 of 10
    raw_offer(a, b.peer_id, 6 * gib, name="second.bin")
    second = (await offers.get(timeout=10)).data
    # alone it would fit too; with what the first still has to write it does not
    assert second.size + b.transfer_settings.keep_free_bytes < free
    with pytest.raises(TransferLimitError, match="not enough disk space") as e:
        await second.accept()
    assert e.value.limit == "disk_space"
    assert f"{6 * gib} reserved for transfers in progress" in str(e.value)
    assert second.state == "declined"
    assert second.reason.startswith("not enough disk space")
    assert (await errors.get(timeout=10)).data.limit == "disk_space"
    assert first.state == "receiving"  # untouched
    await first.cancel("done with the test")


async def test_finished_transfers_are_forgotten_beyond_the_history(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b = await pair(make_peer, tmp_path)
    a.transfer_settings.history = b.transfer_settings.history = 3
    b.transfer_settings.max_file_bytes = 500
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    make_file(small, 100)
    make_file(big, 1000)
    pending = [await a.share_file(small) for _ in range(5)]
    declined = [await a.share_file(big) for _ in range(10)]
    for share in declined:
        assert await share.wait(timeout=10) == {b.peer_id: "declined"}
    assert b._transfers is not None
    assert a._transfers is not None
    states = [t.state for t in b._transfers.incoming.values()]
    assert sorted(states) == ["declined"] * 3 + ["offered"] * 5  # pending ones always stay
    assert len(a._transfers.outgoing) == 5 + 3
    assert len(b.offers) == 5
    for offer in b.offers:
        await offer.decline("no")
    for share in pending:
        assert await share.wait(timeout=10) == {b.peer_id: "declined"}


async def test_dataframe_reading_is_checked_against_its_metadata(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 24)
    got = b.events("file_received")
    zeros = pd.DataFrame({"zeros": np.zeros(1_000_000, dtype="int64")})
    await a.share_dataframe(zeros, name="bomb")
    rec = (await got.get(timeout=30)).data
    assert rec.size < 4_000_000  # 8 MB of data, less on the wire, and on disk
    with pytest.raises(DataFrameTooLarge, match="1000000 rows; the limit is 999999"):
        rec.dataframe(max_rows=999_999)
    with pytest.raises(DataFrameTooLarge, match="uncompressed bytes; the limit is 4000000"):
        rec.dataframe(max_bytes=4_000_000)
    pd.testing.assert_frame_equal(rec.dataframe(), zeros)
    small = pd.DataFrame({"a": list(range(100))})
    await a.share_dataframe(small, name="text", format="csv")
    rec = (await got.get(timeout=30)).data
    with pytest.raises(DataFrameTooLarge, match="bytes; the limit is 10 "):
        rec.dataframe(max_bytes=10)
    pd.testing.assert_frame_equal(rec.dataframe(), small)


async def test_a_stalled_transfer_gives_its_slot_back(make_peer: MakePeer, tmp_path: Path) -> None:
    """A peer that has its offers accepted and then sends nothing would hold
    slots (and open files) for ever: after ``stall_timeout`` they fail."""
    a, b = await pair(make_peer, tmp_path)
    b.transfer_settings.stall_timeout = 0.5
    b.transfer_settings.max_active_per_peer = 1
    offers, fails = b.events("file_offer"), b.events("transfer_failed")
    held = await stalled(a, b, offers, 1)
    ev = await fails.wait_for("transfer_failed", timeout=10)
    assert ev.data["reason"] == "no data for 0.5s"
    assert held[0].state == "failed"
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.endswith(".part")]
    # a real transfer, slower than the timeout overall, is not a stall
    b.set_auto_accept(1 << 30)
    src = tmp_path / "steady.bin"
    digest = make_file(src, 5_000_000)
    got = b.events("file_received")
    share = await a.share_file(src)
    assert sha((await got.get(timeout=60)).data.path) == digest
    assert await share.wait(timeout=10) == {b.peer_id: "done"}
