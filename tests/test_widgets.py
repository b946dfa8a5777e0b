"""The chat panel driven from code, as tests and users script it (no browser)."""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import ipywidgets
import pandas as pd
import pytest

from p2p_nb import ChatPanel, new_room_secret
from p2p_nb.app import P2PApp, run_blocking
from p2p_nb.errors import P2PError
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


def upcoming(
    app: P2PApp, name: str, predicate: Callable[[Event], bool] = lambda e: True
) -> asyncio.Future[Event]:
    """The next ``name`` event, subscribed at once (``handled`` subscribes only when
    awaited), so events already on their way to this loop are not missed."""
    got: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def handler(event: Event) -> None:
        if not got.done() and predicate(event):
            got.set_result(event)

    off = app.on(name, handler)
    got.add_done_callback(lambda _: off())
    return got


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
    connected = upcoming(panel.app, "peer_connected")  # before the check: none is missed
    if not panel.app.connected_peers():
        await asyncio.wait_for(connected, 30)
    connected.cancel()
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
    assert "<bdi>ben</bdi> offers" in row.children[0].value
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
    preview = await changed_to(
        panel.received.children[0].children[1], lambda v: "preview…" not in v
    )
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


# --- hostile text: everything another party sends is shown, never run ----------------

HOSTILE = '<img src=x onerror="window.__xss=1">'


class _Tags(HTMLParser):
    """Every element and attribute name in an HTML string, as a browser would parse it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def injected(markup: str) -> list[str]:
    """Elements or event-handler attributes in ``markup`` that only ``HOSTILE`` could add."""
    parsed = _Tags()
    parsed.feed(markup)
    return [t for t in parsed.tags if t in ("img", "script", "svg", "iframe")] + [
        a for a in parsed.attrs if a.startswith("on")
    ]


VIEW_CALLS: dict[str, Callable[[], str]] = {
    "title_html": lambda: view.title_html(HOSTILE, HOSTILE, HOSTILE),
    "section_html": lambda: view.section_html(HOSTILE),
    "peers_html": lambda: view.peers_html(
        [view.PeerRow(HOSTILE, HOSTILE, HOSTILE, None, HOSTILE, (HOSTILE, HOSTILE), HOSTILE)]
    ),
    "chat_html": lambda: view.chat_html(
        [ChatMessage(HOSTILE, 1, 0.0, to=HOSTILE, sender=HOSTILE, sender_name=HOSTILE)], me=None
    ),
    "status_html": lambda: view.status_html(HOSTILE, [HOSTILE, HOSTILE], HOSTILE),
    "offer_text": lambda: view.offer_text(
        HOSTILE,
        HOSTILE,
        HOSTILE,  # type: ignore[arg-type]  # a peer's offer: any JSON value
        "dataframe",
        {"shape": [HOSTILE, HOSTILE], "columns": [HOSTILE], "dtypes": [HOSTILE]},
    ),
    "progress_html": lambda: view.progress_html(HOSTILE, HOSTILE, HOSTILE, HOSTILE),
    "sent_html": lambda: view.sent_html(HOSTILE),
    "received_label_html": lambda: view.received_label_html(HOSTILE),
    "failed_html": lambda: view.failed_html(HOSTILE, HOSTILE),
    "received_html": lambda: view.received_html(HOSTILE, Path(HOSTILE), HOSTILE, HOSTILE),  # type: ignore[arg-type]
    "preview_html": lambda: view.preview_html(
        view.Preview((HOSTILE, HOSTILE), ((HOSTILE, HOSTILE),), (HOSTILE,))
    ),
    "preview_error_html": lambda: view.preview_error_html(ValueError(HOSTILE)),
    "preview_pending_html": view.preview_pending_html,
}


def test_every_view_function_escapes_every_field() -> None:
    rendering = {
        name
        for name, fn in vars(view).items()
        if inspect.isfunction(fn)
        and fn.__module__ == view.__name__
        and (name.endswith("_html") or name == "offer_text")
    }
    assert rendering == set(VIEW_CALLS), "a view function has no hostile-input case here"
    for name, call in VIEW_CALLS.items():
        out = call()
        assert injected(out) == [], (name, out)
        if name != "preview_pending_html":
            assert view.esc(HOSTILE) in out, name  # shown, literally


def test_download_link_keeps_a_hostile_file_name_inside_its_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved names keep ``'`` and ``=`` (files.py drops only ``<>:"|?*``)."""
    monkeypatch.setenv("P2P_NB_URL", "http://127.0.0.1:8888/base/")
    monkeypatch.setenv("P2P_NB_ROOT_DIR", str(tmp_path))
    name = "x' onmouseover='window.__xss=1' y.csv"
    out = view.received_html(HOSTILE, tmp_path / name, HOSTILE, 3)
    assert "<a href='/base/files/x%27%20onmouseover%3D%27window.__xss%3D1%27%20y.csv'" in out
    assert injected(out) == []


def test_preview_cells_are_cut_for_display() -> None:
    out = view.preview_html(view.Preview(("c" * 500,), (("v" * 10_000,),)))
    assert "c" * view.MAX_CELL_CHARS not in out
    assert "v" * (view.MAX_CELL_CHARS - 1) + "…" in out
    assert "v" * view.MAX_CELL_CHARS not in out


def html_values(widget: Any) -> list[str]:
    """The markup of every ``HTML`` widget under ``widget`` (what the browser renders)."""
    found = [widget.value] if isinstance(widget, ipywidgets.HTML) else []
    for child in getattr(widget, "children", ()):
        found += html_values(child)
    return found


async def test_hostile_peer_text_reaches_no_widget_as_markup(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path
) -> None:
    """File names, DataFrame names and columns, cancel reasons: all shown, none parsed."""
    panel, partner = room
    df = pd.DataFrame({HOSTILE: [HOSTILE, "x"]})
    received = handled(panel.app, "file_received")
    offered = handled(panel.app, "file_offer")
    await partner.share_dataframe(df, name=HOSTILE)
    await offered
    panel.offers.children[0].children[1].click()  # Accept
    await received
    preview_widget = panel.received.children[0].children[1]
    await changed_to(preview_widget, lambda v: "preview…" not in v)
    src = tmp_path / "evil.csv"
    src.write_text(f"a,b\n{HOSTILE},2\n")
    offered = handled(panel.app, "file_offer")
    failed = handled(panel.app, "transfer_failed")
    share = await partner.share_file(src, name=f"{HOSTILE}.csv")
    await offered
    (t,) = share.transfers.values()
    await t.cancel(reason=f"cancelled {HOSTILE}")
    await failed
    values = html_values(panel.widget)
    for markup in values:
        assert injected(markup) == [], markup
    text = "".join(values)
    assert f"received <b>{view.iso(HOSTILE)}</b>" in text
    assert (
        f"<b>{view.iso(HOSTILE + '.csv')}</b> failed: "
        f"{view.iso(f'cancelled by ben: cancelled {HOSTILE}')}" in text
    )
    assert f"<th>{view.esc(HOSTILE)}</th>" in preview_widget.value


async def changed_to(widget: Any, predicate: Callable[[str], bool], timeout: float = 30) -> str:
    """Until ``widget.value`` satisfies ``predicate`` (checked now and on every change)."""
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def check(change: Any = None) -> None:
        if not got.done() and predicate(widget.value):
            got.set_result(widget.value)

    widget.observe(check, names="value")
    try:
        check()
        return await asyncio.wait_for(got, timeout)
    finally:
        widget.unobserve(check, names="value")


# --- state the panel shows must follow the app ---------------------------------------


async def test_own_message_sent_from_code_shows_in_the_chat(
    room: tuple[ChatPanel, P2PApp],
) -> None:
    """A cell's ``await app.send_message(...)`` appears in the panel like a typed one."""
    panel, partner = room
    inbox = partner.events("message")
    await panel.app.send_message("sent from a cell")
    await inbox.get(timeout=10)
    chat = await changed_to(panel.chat, lambda v: "sent from a cell" in v, timeout=10)
    assert chat.count("p2p-mine") == 1


async def test_no_peer_is_shown_connected_after_leaving(
    room: tuple[ChatPanel, P2PApp],
) -> None:
    panel, _ = room
    assert "connected" in panel.peers.value
    panel.close()
    assert "ben" not in panel.peers.value
    assert "connected" not in panel.peers.value
    assert "Not in a room." in panel.peers.value


async def test_disconnect_from_code_clears_the_peer_table(
    room: tuple[ChatPanel, P2PApp],
) -> None:
    panel, _ = room
    gone = upcoming(panel.app, "disconnected")
    await panel.app.disconnect()
    await asyncio.wait_for(gone, 10)
    assert "Not in a room." in panel.peers.value
    assert "Left the room." in panel.status.value


async def test_upload_temp_folders_are_removed(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the transfer ends, and at once when the share fails."""
    panel, partner = room
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    got = partner.events("file_received")
    item = {
        "name": "small.bin",
        "type": "",
        "size": 5,
        "content": memoryview(b"12345"),
        "last_modified": datetime.now(UTC),
    }
    panel.upload.value = (item,)
    (job,) = panel._uploads
    assert (await got.get(timeout=10)).data.path.read_bytes() == b"12345"
    await asyncio.wrap_future(job)
    assert list(temp.iterdir()) == []
    run_blocking(panel.app, panel.app.leave_room(), timeout=30)
    panel.upload.value = (item,)
    (job,) = panel._uploads
    with pytest.raises(P2PError):
        await asyncio.wrap_future(job)
    assert list(temp.iterdir()) == []
    await changed_to(panel.status, lambda v: "could not share small.bin" in v)


async def test_file_received_after_the_app_left_is_still_shown(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """The panel never reads the transfer manager (the network thread's): here the
    app has left the room, and dropped it, before the kernel's loop handles the event."""
    partner = await P2PApp.connect(
        server_process.url, server_process.token, thread=True, download_dir=tmp_path / "p"
    )
    await partner.join_room("late-room", name="ben")
    linked = partner.events("peer_connected")
    panel = ChatPanel(
        "late-room",
        "ana",
        url=server_process.url,
        token=server_process.token,
        download_dir=tmp_path / "panel",
        auto_accept_max_bytes=1 << 20,
    )
    try:
        await linked.get(timeout=30)
        arrived = threading.Event()
        off = await asyncio.to_thread(panel.app.on, "file_received", lambda e: arrived.set())
        after_panel = upcoming(panel.app, "file_received")  # runs after the panel's handler
        csv = tmp_path / "late.csv"
        csv.write_text("a,b\n1,2\n")
        await partner.share_file(csv)
        # The kernel's loop is busy (as in a running cell) while the file arrives on
        # the network thread and the app leaves the room.
        assert arrived.wait(30)
        run_blocking(panel.app, panel.app.leave_room(), timeout=30)
        off()
        await asyncio.wait_for(after_panel, 30)
        labels = [row.children[1].value for row in panel.transfers.children]
        assert labels == ["received <b><bdi>late.csv</bdi></b>"]
        assert "late.csv" in panel.received.children[0].children[0].value
    finally:
        panel.close()
        await partner.disconnect()


def test_a_peer_clock_far_off_cannot_break_the_chat() -> None:
    """``ts`` is any finite number on the wire; ``time.localtime(1e300)`` raises, and
    one such message would stop every later chat render."""
    msgs = [
        ChatMessage("from the far future", 1, 1e300, sender="h", sender_name="h"),
        ChatMessage("next", 2, -1e300, sender="h", sender_name="h"),
    ]
    out = view.chat_html(msgs, me=None)
    assert "from the far future" in out
    assert "--:--:--" in out


async def test_the_invite_button_shows_a_link_a_guest_panel_joins_with(
    room: tuple[ChatPanel, P2PApp], tmp_path: Path
) -> None:
    panel, _ = room
    panel.invite_button.click()
    link = await changed_to(panel.invite_link, lambda v: "invite=inv1." in v, timeout=30)
    assert "room=panel-room" in link
    assert panel.invite_link.layout.display == "flex"
    # a room joined without a secret: the link has none, and the panel says so
    assert "secret=" not in link
    assert "carries no room secret" in panel.status.value
    guest = await asyncio.to_thread(
        ChatPanel, invite=link, name="cy", download_dir=tmp_path / "guest"
    )
    try:
        assert guest.app.room == "panel-room"
        seen = await changed_to(panel.peers, lambda v: "cy" in v, timeout=30)
        assert "cy" in seen
        # the guest's link open too (not left mid-negotiation by the close below)
        await changed_to(guest.peers, lambda v: "connected" in v, timeout=30)
    finally:
        await asyncio.to_thread(guest.close)


async def test_an_invite_with_the_room_secret_shows_no_notice(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    panel = ChatPanel(
        "secret-room",
        "ana",
        url=server_process.url,
        token=server_process.token,
        secret=new_room_secret(),
        download_dir=tmp_path,
    )
    try:
        panel.invite_button.click()
        link = await changed_to(panel.invite_link, lambda v: "invite=inv1." in v, timeout=30)
        assert "&secret=" in link
        assert "no room secret" not in panel.status.value
    finally:
        panel.close()


async def test_a_changed_safety_code_is_a_warning_in_the_panel(
    room: tuple[ChatPanel, P2PApp],
) -> None:
    panel, partner = room
    panel._on_event(
        Event(
            "safety_code_changed",
            partner.peer_id,
            {"name": "<b>ben</b>", "old": "111 111", "new": "222 222"},
        )
    )
    assert "safety code changed from 111 111 to 222 222" in panel.status.value
    assert "&lt;b&gt;ben&lt;/b&gt;" in panel.status.value
