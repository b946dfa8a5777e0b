"""The chat panel driven from code, as tests and users script it (no browser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from p2p_nb import ChatPanel
from p2p_nb.app import P2PApp
from p2p_nb.events import Event
from p2p_nb.protocol import ChatMessage
from p2p_nb.widgets import view

from .conftest import ServerProcess

pytestmark = pytest.mark.anyio


async def handled(
    app: P2PApp, name: str, predicate: Callable[[Event], bool] = lambda e: True, timeout: float = 30
) -> Event:
    """The next ``name`` event, once every handler registered before us has run."""
    got: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def handler(event: Event) -> None:
        if not got.done() and predicate(event):
            got.set_result(event)

    off = app.on(name, handler)
    try:
        return await asyncio.wait_for(got, timeout)
    finally:
        off()


@pytest.fixture
async def room(
    server_process: ServerProcess, tmp_path: Path
) -> AsyncIterator[tuple[ChatPanel, P2PApp]]:
    partner = await P2PApp.connect(
        server_process.url,
        server_process.token,
        thread=False,
        download_dir=tmp_path / "partner",
        auto_accept_max_bytes=1 << 30,
    )
    await partner.join_room("panel-room", name="ben")
    joined = partner.events("peer_connected")
    panel = ChatPanel(
        "panel-room",
        "ana",
        url=server_process.url,
        token=server_process.token,
        download_dir=tmp_path / "panel",
    )
    await joined.get(timeout=30)
    # subscribed before the check: the panel's side may connect right after it
    connected = panel.app.events("peer_connected")
    if not panel.app.connected_peers():
        await connected.get(timeout=30)  # the panel's own handler ran before this
    connected.close()
    yield panel, partner
    panel.close()
    await partner.disconnect()


async def test_chat_both_ways(room: tuple[ChatPanel, P2PApp]) -> None:
    panel, partner = room
    assert "ben" in panel.peers.value
    assert "connected" in panel.peers.value
    inbox = partner.events("message")
    panel.input.value = "hello from the panel"  # what Enter does in the browser
    assert (await inbox.get(timeout=10)).data.text == "hello from the panel"
    assert panel.input.value == ""
    panel.input.value = "and the button"
    panel.send_button.click()
    assert (await inbox.get(timeout=10)).data.text == "and the button"
    await partner.send_message("hi <ana> & co")
    await handled(panel.app, "message")
    assert "hi &lt;ana&gt; &amp; co" in panel.chat.value
    assert panel.chat.value.count("p2p-mine") == 2  # own messages look different


async def test_offer_accept_progress_and_preview(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path
) -> None:
    panel, partner = room
    csv = tmp_path / "prices.csv"
    csv.write_text("item,price\nfirst-row-item,1.5\nsecond,2.5\n")
    offered = handled(panel.app, "file_offer")
    share = await partner.share_file(csv)
    await offered
    (row,) = panel.offers.children
    assert "prices.csv" in row.children[0].value
    assert "ben offers" in row.children[0].value
    received = handled(panel.app, "file_received")
    row.children[1].click()  # Accept
    await received
    assert panel.offers.children == ()
    assert await share.wait(timeout=10) == {panel.app.peer_id: "done"}
    (bar_row,) = panel.transfers.children
    bar = bar_row.children[0]
    assert bar.bar_style == "success"
    assert bar.value == bar.max
    (rec,) = panel.received.children
    assert "prices.csv" in rec.children[0].value
    assert (tmp_path / "panel" / "prices.csv").read_text() == csv.read_text()


async def test_dataframe_preview_and_decline(room: tuple[ChatPanel, P2PApp]) -> None:
    panel, partner = room
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 19.0]})
    received = handled(panel.app, "file_received")
    offered = handled(panel.app, "file_offer")
    await partner.share_dataframe(df, name="weather")
    await offered
    panel.offers.children[0].children[1].click()
    await received
    preview = panel.received.children[0].children[1].value
    assert "Oslo" in preview
    assert "19.0" in preview
    pd.testing.assert_frame_equal(panel.app.received["weather"].dataframe(), df)
    # declining
    failed = partner.events("transfer_failed")
    offered = handled(panel.app, "file_offer")
    await partner.share_dataframe(df, name="again")
    await offered
    panel.offers.children[0].children[2].click()  # Decline
    assert "declined" in (await failed.get(timeout=10)).data["reason"]


async def test_panel_shares_files_and_frames(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path
) -> None:
    panel, partner = room
    got = partner.events("file_received")
    df = pd.DataFrame({"a": [1, 2]})
    panel.share_dataframe(df, "from_panel")
    assert (await got.get(timeout=30)).data.name == "from_panel"
    src = tmp_path / "notes.txt"
    src.write_text("typed path")
    panel.path.value = str(src)
    panel.path_button.click()
    assert (await got.get(timeout=30)).data.path.read_text() == "typed path"


async def test_upload_limit_is_stated_and_enforced(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path
) -> None:
    panel, partner = room
    assert "8.4 MB" in panel.upload.description
    panel.upload_limit = 10
    offers = partner.events("file_offer", "file_received")
    big = {
        "name": "big.bin",
        "type": "",
        "size": 11,
        "content": memoryview(b"x" * 11),
        "last_modified": datetime.now(UTC),
    }
    panel.upload.value = (big,)
    assert "big.bin is 11 B" in panel.status.value
    assert "Share it by path" in panel.status.value
    small = {**big, "name": "small.bin", "size": 5, "content": memoryview(b"12345")}
    panel.upload.value = (small,)
    ev = await offers.get(timeout=10)
    assert ev.data.name == "small.bin"
    ev = await offers.get(timeout=10)
    assert ev.data.path.read_bytes() == b"12345"


async def test_close_leaves_the_room(room: tuple[ChatPanel, P2PApp]) -> None:
    panel, partner = room
    left = partner.events("peer_left")
    panel.leave_button.click()
    assert (await left.get(timeout=10)).peer_id is not None
    assert panel.input.disabled
    assert "Left the room" in panel.status.value
    assert partner.peers == {}


def test_chat_rendering_is_capped_and_escaped() -> None:
    msgs = [
        ChatMessage(text=f"m{i}", seq=i, ts=0.0, sender="x", sender_name="x") for i in range(500)
    ]
    out = view.chat_html(msgs, me="y")
    assert out.count("class='p2p-msg") == view.MAX_RENDERED_MESSAGES
    assert "m499" in out
    assert "m299" not in out
    assert out.index("m499") < out.index("m498")  # column-reverse: newest first in the DOM
    assert "&lt;b&gt;" in view.chat_html([ChatMessage("<b>", 1, 0.0, sender="x")], me=None)
