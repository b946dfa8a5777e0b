"""File and DataFrame transfers between real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from p2p_nb import protocol
from p2p_nb.app import P2PApp
from p2p_nb.events import EventStream
from p2p_nb.transfer import TransferSettings

from .conftest import MakePeer, RunningServer, peer_process
from .test_mesh import wait_mesh

pytestmark = pytest.mark.anyio

CHUNK = protocol.CHUNK_SIZE


def make_file(path: Path, size: int) -> str:
    """A file of ``size`` pseudo-random bytes; returns its SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        block = os.urandom(min(size, 1 << 20)) if size else b""
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def pair(make_peer: MakePeer, tmp_path: Path, **kw: object) -> tuple[P2PApp, P2PApp]:
    a = await make_peer("ana", download_dir=tmp_path / "a", **kw)
    b = await make_peer("ben", download_dir=tmp_path / "b", **kw)
    await wait_mesh([a, b])
    return a, b


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def accept_next(stream: EventStream) -> None:
    offer = (await stream.wait_for("file_offer", timeout=10)).data
    await offer.accept()


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 50_000_000])
async def test_sizes_arrive_intact(make_peer: MakePeer, tmp_path: Path, size: int) -> None:
    a, b = await pair(make_peer, tmp_path)
    src = tmp_path / "payload.bin"
    digest = make_file(src, size)
    events_b = b.events()
    events_a = a.events("file_sent", "file_progress", "transfer_failed")
    share = await a.share_file(src)
    offer_ev = await events_b.wait_for("file_offer", timeout=10)
    offer = offer_ev.data
    assert (offer.name, offer.size, offer.sha256, offer.kind) == (
        "payload.bin",
        size,
        digest,
        "file",
    )
    assert offer.sender_name == "ana"
    assert offer_ev.peer_id == a.peer_id
    await offer.accept()
    got = await events_b.wait_for("file_received", timeout=120)
    assert got.data.path == tmp_path / "b" / "payload.bin"
    assert got.data.size == size
    assert sha(got.data.path) == digest
    assert b.received["payload.bin"] == got.data
    assert await share.wait(timeout=30) == {b.peer_id: "done"}
    sent = await events_a.wait_for("file_sent", timeout=10)
    assert sent.data["size"] == size
    assert listing(tmp_path / "b") == ["payload.bin"]  # no part file left behind


async def test_progress_reported_on_both_sides(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    src = tmp_path / "big.bin"
    make_file(src, 20_000_000)
    prog_a, prog_b = a.events("file_progress"), b.events("file_progress", "file_received")
    await a.share_file(src)
    seen_b = []
    while True:
        ev = await prog_b.get(timeout=60)
        if ev.name == "file_received":
            break
        seen_b.append(ev.data["bytes"])
    assert seen_b == sorted(seen_b)
    assert seen_b[-1] == 20_000_000
    last_a = None
    while last_a is None or last_a.data["bytes"] < 20_000_000:
        last_a = await prog_a.get(timeout=30)
        assert last_a.data["total"] == 20_000_000
        assert last_a.data["rate"] > 0


async def test_one_sender_three_receivers(make_peer: MakePeer, tmp_path: Path) -> None:
    sender = await make_peer("s", download_dir=tmp_path / "s")
    receivers = [
        await make_peer(f"r{i}", download_dir=tmp_path / f"r{i}", auto_accept_max_bytes=1 << 30)
        for i in range(3)
    ]
    await wait_mesh([sender, *receivers])
    src = tmp_path / "shared.bin"
    digest = make_file(src, 5_000_000)
    streams = [r.events("file_received") for r in receivers]
    share = await sender.share_file(src)
    for r, stream in zip(receivers, streams, strict=True):
        ev = await stream.get(timeout=60)
        assert sha(ev.data.path) == digest
        assert ev.data.path.parent == r.transfer_settings.download_dir
        assert ev.data.sender == sender.peer_id
    assert set((await share.wait(timeout=30)).values()) == {"done"}


async def test_both_directions_at_once(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    fa, fb = tmp_path / "from_a.bin", tmp_path / "from_b.bin"
    da, db = make_file(fa, 8_000_000), make_file(fb, 8_000_000)
    ra, rb = a.events("file_received"), b.events("file_received")
    shares = await asyncio.gather(a.share_file(fa), b.share_file(fb))
    assert sha((await rb.get(timeout=60)).data.path) == da
    assert sha((await ra.get(timeout=60)).data.path) == db
    for share in shares:
        assert set((await share.wait(timeout=10)).values()) == {"done"}


async def test_two_transfers_on_one_link_share_it(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    make_file(first, 20_000_000)
    make_file(second, 20_000_000)
    events = b.events("file_received")
    shares = [await a.share_file(first), await a.share_file(second)]
    done = await events.get(timeout=120)
    others = [
        s.transfers[b.peer_id] for s in shares if s.transfers[b.peer_id].name != done.data.name
    ]
    # when one finished, the other had been given a fair share of the channel
    assert others[0].bytes >= 20_000_000 // 2
    await events.get(timeout=120)


async def test_chat_is_not_stuck_behind_a_file(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    src = tmp_path / "big.bin"
    make_file(src, 60_000_000)
    events_b = b.events("file_progress", "message", "file_received")
    await a.share_file(src)
    await events_b.wait_for("file_progress", timeout=10)
    await a.send_message("while the file flows")
    ev = await events_b.wait_for("message", timeout=10)
    assert ev.data.text == "while the file flows"
    # the chat arrived before the file finished: nothing about it had been received yet
    assert "big.bin" not in b.received
    await events_b.wait_for("file_received", timeout=120)


def mixed_frame() -> pd.DataFrame:
    n = 1000
    return pd.DataFrame(
        {
            "when": pd.date_range("2026-01-01", periods=n, freq="h", tz="Europe/Paris"),
            "cat": pd.Categorical(["x", "y", "z", "x"] * (n // 4)),
            "count": pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64"),
            "text": pd.array([f"row {i}" if i % 5 else None for i in range(n)], dtype="string"),
            "value": [i / 3 for i in range(n)],
            "flag": [i % 2 == 0 for i in range(n)],
        },
        index=pd.Index([f"k{i}" for i in range(n)], name="key"),
    )


async def test_dataframe_round_trip_keeps_dtypes(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path)
    df = mixed_frame()
    events_b = b.events("file_offer", "file_received")
    share = await a.share_dataframe(df, name="sales_q3")
    offer = (await events_b.wait_for("file_offer", timeout=10)).data
    assert offer.kind == "dataframe"
    assert offer.meta["shape"] == [1000, 6]
    assert offer.meta["columns"] == list(df.columns)
    assert offer.meta["dtypes"] == [str(t) for t in df.dtypes]
    await offer.accept()
    await events_b.wait_for("file_received", timeout=30)
    back = b.received["sales_q3"].dataframe()
    pd.testing.assert_frame_equal(back, df)
    assert await share.wait(timeout=10) == {b.peer_id: "done"}


async def test_dataframe_as_csv(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    done = b.events("file_received")
    await a.share_dataframe(df, name="small", format="csv")
    rec = (await done.get(timeout=10)).data
    assert rec.path.name == "small.csv"
    pd.testing.assert_frame_equal(b.received["small"].dataframe(), df)
    with pytest.raises(ValueError, match="format"):
        await a.share_dataframe(df, name="x", format="pickle")


async def test_corrupted_chunk_fails_and_saves_nothing(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    src = tmp_path / "data.bin"
    make_file(src, 3_000_000)

    def flip_one_bit(tid: str, offset: int, data: bytes) -> bytes:
        if offset == CHUNK * 3:
            return bytes([data[0] ^ 1]) + data[1:]
        return data

    a._transfers.chunk_hook = flip_one_bit  # type: ignore[union-attr]
    fail_a, fail_b = a.events("transfer_failed"), b.events("transfer_failed", "file_received")
    share = await a.share_file(src)
    ev = await fail_b.get(timeout=30)
    assert ev.name == "transfer_failed"
    assert "SHA-256 mismatch" in ev.data["reason"]
    ev_a = await fail_a.get(timeout=10)
    assert "SHA-256 mismatch" in ev_a.data["reason"]
    assert await share.wait(timeout=5) == {b.peer_id: "failed"}
    assert listing(tmp_path / "b") == []
    assert "data.bin" not in b.received
    # the link is fine afterwards
    inbox = b.events("message")
    await a.send_message("still fine")
    assert (await inbox.get(timeout=10)).data.text == "still fine"


async def test_receiver_declines(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path)
    src = tmp_path / "x.bin"
    make_file(src, 1000)
    offers, fail_a = b.events("file_offer"), a.events("transfer_failed")
    share = await a.share_file(src)
    assert len(b.offers) in (0, 1)
    offer = (await offers.get(timeout=10)).data
    assert b.offers == [offer]
    await offer.decline("not now")
    ev = await fail_a.get(timeout=10)
    assert ev.data["reason"] == "declined by ben: not now"
    assert await share.wait(timeout=5) == {b.peer_id: "declined"}
    assert b.offers == []
    assert listing(tmp_path / "b") == []


@pytest.mark.parametrize("side", ["receiver", "sender"])
async def test_cancel_mid_transfer(make_peer: MakePeer, tmp_path: Path, side: str) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    src = tmp_path / "big.bin"
    make_file(src, 200_000_000)
    prog = b.events("file_progress")
    fail_a, fail_b = a.events("transfer_failed"), b.events("transfer_failed")
    share = await a.share_file(src)
    ev = await prog.get(timeout=30)
    if side == "receiver":
        await ev.data["transfer"].cancel("changed my mind")
    else:
        await share.transfers[b.peer_id].cancel("changed my mind")
    ra = (await fail_a.get(timeout=10)).data["reason"]
    rb = (await fail_b.get(timeout=10)).data["reason"]
    assert ra.endswith("changed my mind")
    assert rb.endswith("changed my mind")
    assert await share.wait(timeout=5) == {b.peer_id: "failed"}
    assert listing(tmp_path / "b") == []


HOSTILE = [
    ("../../etc/passwd", "passwd"),
    ("/abs", "abs"),
    ("con", "_con"),
    ("x" * 1000, "x" * 200),
    ("a\x00b.txt", "ab.txt"),
    ("..", "file"),
    ("..\\..\\windows\\evil.bat", "evil.bat"),
]


async def test_hostile_names_stay_inside_the_folder(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    src = tmp_path / "innocent.txt"
    src.write_bytes(b"hello")
    got = b.events("file_received")
    for hostile, _ in HOSTILE:
        await a.share_file(src, name=hostile)
    saved = sorted([(await got.get(timeout=10)).data.path for _ in HOSTILE])
    folder = (tmp_path / "b").resolve()
    for path in saved:
        assert path.resolve().parent == folder
        assert path.read_bytes() == b"hello"
    assert sorted(p.name for p in saved) == sorted(expected for _, expected in HOSTILE)
    assert listing(tmp_path / "b") == sorted(p.name for p in saved)
    assert not (tmp_path / "etc").exists()


async def test_overlong_names_are_refused(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    src = tmp_path / "innocent.txt"
    src.write_bytes(b"hello")
    with pytest.raises(ValueError, match="5000 characters"):
        await a.share_file(src, name="y" * 5000)
    # a hostile peer that sends one anyway gets nothing saved: an error event only
    errors = b.events("error")
    offer = protocol.FileOffer(
        id=protocol.new_transfer_id(), name="z" * 5000, size=5, sha256="0" * 64
    )
    a._mesh.send(b.peer_id, offer.encode())  # type: ignore[union-attr]
    assert "longer than 1024" in str((await errors.get(timeout=10)).data)
    assert b.offers == []
    assert listing(tmp_path / "b") == []


async def test_never_overwrites(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "data.csv").write_text("mine")
    src = tmp_path / "data.csv"
    src.write_text("theirs")
    got = b.events("file_received")
    await a.share_file(src)
    await a.share_file(src)
    paths = sorted([(await got.get(timeout=10)).data.path.name for _ in range(2)])
    assert paths == ["data (1).csv", "data (2).csv"]
    assert (tmp_path / "b" / "data.csv").read_text() == "mine"


async def test_oversized_offer_is_declined(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path)
    b.transfer_settings.max_file_bytes = 10
    src = tmp_path / "x.bin"
    make_file(src, 11)
    fail_a = a.events("transfer_failed")
    await a.share_file(src)
    assert "limit of 10 bytes" in (await fail_a.get(timeout=10)).data["reason"]


async def test_stray_binary_frame_is_an_error_not_a_crash(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b = await pair(make_peer, tmp_path)
    errors = b.events("error")
    a._mesh.send(b.peer_id, protocol.encode_chunk("ab" * 16, 0, b"junk"))  # type: ignore[union-attr]
    a._mesh.send(b.peer_id, b"\x07short")  # type: ignore[union-attr]
    first, second = await errors.get(timeout=10), await errors.get(timeout=10)
    assert "not receiving" in str(first.data)
    assert "shorter than its header" in str(second.data)
    inbox = b.events("message")
    await a.send_message("ok")
    assert (await inbox.get(timeout=10)).data.text == "ok"


async def test_resume_after_link_drop(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 30)
    src = tmp_path / "big.bin"
    size = 40_000_000
    digest = make_file(src, size)
    events_b = b.events("file_progress", "transfer_interrupted", "file_received", "peer_connected")
    share = await a.share_file(src)
    ev = await events_b.wait_for("file_progress", lambda e: e.data["bytes"] > size // 4, timeout=60)
    # cut the link under the transfer, as a network failure would
    await b._mesh.links[a.peer_id].pc.close()  # type: ignore[union-attr]
    await events_b.wait_for("transfer_interrupted", timeout=10)
    await events_b.wait_for("peer_connected", timeout=30)
    got = await events_b.wait_for("file_received", timeout=120)
    assert sha(got.data.path) == digest
    out = share.transfers[b.peer_id]
    assert await out.wait(timeout=10) == "done"
    assert len(out.starts) == 2
    assert out.starts[0] == 0
    assert out.starts[1] >= ev.data["bytes"] - 2 * (1 << 20)  # resumed, not restarted
    assert listing(tmp_path / "b") == ["big.bin"]


async def test_sender_killed_mid_transfer(
    signal_server: RunningServer, make_peer: MakePeer, tmp_path: Path
) -> None:
    b = await make_peer("ben", download_dir=tmp_path / "b", auto_accept_max_bytes=1 << 31)
    src = tmp_path / "huge.bin"
    make_file(src, 300_000_000)
    connected = b.events("peer_connected")
    async with peer_process(signal_server.url, signal_server.token, "room1", "doomed") as (
        proc,
        sender,
    ):
        await connected.wait_for("peer_connected", lambda e: e.peer_id == sender, timeout=30)
        events = b.events("file_progress", "transfer_failed", "file_received")
        await b.send_message(f"share {src}", to=sender)
        await events.wait_for("file_progress", lambda e: e.data["bytes"] > 0, timeout=60)
        proc.send_signal(signal.SIGKILL)
        ev = await events.wait_for("transfer_failed", timeout=30)
        assert "gone" in ev.data["reason"]
    assert listing(tmp_path / "b") == []
    assert "huge.bin" not in b.received


def test_the_send_window_is_short_on_loopback_and_grows_with_the_round_trip() -> None:
    s = TransferSettings()
    assert s.window_for(None) == s.window_for(0.0002) == s.window == 256 * 2**10
    assert s.window_for(0.05) == int(0.05 * s.window_rate)  # 3.2 MB for a 50 ms link
    assert s.window_for(5.0) == s.max_window
    assert s.ack_every * 2 <= s.window  # the receiver acknowledges well inside it


async def test_a_pending_offer_survives_a_link_drop(make_peer: MakePeer, tmp_path: Path) -> None:
    """An offer nobody had answered used to come back as a ``resume``, which
    the receiver (holding no part file) failed: a link blip killed every
    pending offer. It is offered again as itself and stays pending."""
    a, b = await pair(make_peer, tmp_path)
    src = tmp_path / "later.bin"
    digest = make_file(src, 3_000_000)
    offers, fails = b.events("file_offer"), b.events("transfer_failed")
    fails_a = a.events("transfer_failed")
    back_a, inbox = a.events("peer_connected"), b.events("message", "file_received")
    share = await a.share_file(src)
    offer = (await offers.get(timeout=10)).data
    await b._mesh.links[a.peer_id].pc.close()  # type: ignore[union-attr]
    await back_a.wait_for("peer_connected", lambda e: e.peer_id == b.peer_id, timeout=30)
    # the sender offered again when the link came back, before this message
    # (one ordered channel): once it has arrived, the offer has been handled
    await a.send_message("back", to=b.peer_id)
    await inbox.wait_for("message", timeout=10)
    assert fails.drain() == []
    assert fails_a.drain() == []
    assert b.offers == [offer]
    assert offers.drain() == []  # the same offer, not a second one
    await offer.accept()
    got = await inbox.wait_for("file_received", timeout=60)
    assert sha(got.data.path) == digest
    assert await share.wait(timeout=10) == {b.peer_id: "done"}
    assert share.transfers[b.peer_id].starts == [0]


async def test_share_dataframe_leaves_no_temp_folder(
    make_peer: MakePeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await pair(make_peer, tmp_path)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # Parquet cannot hold a column of ints, strings and dicts: writing it fails
    bad = pd.DataFrame({"mixed": [1, "two", {"three": 3}]})
    with pytest.raises((ValueError, TypeError)):
        await a.share_dataframe(bad, name="bad")
    assert listing(temp) == []
    # an offer still open when the app goes: its folder goes too
    offers = b.events("file_offer")
    await a.share_dataframe(pd.DataFrame({"x": [1, 2]}), name="never_accepted")
    await offers.get(timeout=10)
    assert len(listing(temp)) == 1
    await a.disconnect()
    assert listing(temp) == []


async def test_a_resume_of_a_pending_offer_keeps_it_pending(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    """A sender that (like older versions) asks to resume an offer nobody has
    answered gets the offer kept pending, not failed."""
    a, b = await pair(make_peer, tmp_path)
    src = tmp_path / "x.bin"
    digest = make_file(src, 100_000)
    offers, fails = b.events("file_offer"), b.events("transfer_failed")
    inbox = b.events("message", "file_received")
    share = await a.share_file(src)
    offer = (await offers.get(timeout=10)).data
    out = share.transfers[b.peer_id]
    a._mesh.send(b.peer_id, dataclasses.replace(out.offer, resume=True).encode())  # type: ignore[union-attr]
    await a.send_message("after the resume", to=b.peer_id)
    await inbox.wait_for("message", timeout=10)
    assert fails.drain() == []
    assert b.offers == [offer]
    await offer.accept()
    assert sha((await inbox.wait_for("file_received", timeout=30)).data.path) == digest
    assert await share.wait(timeout=10) == {b.peer_id: "done"}
