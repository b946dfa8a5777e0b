"""The web client as a newcomer finds it (issue 18 items 1-10 and 13, issue 17
items 6 and 9): what a person does at human speed, the mistakes they make, and
what the page says back.

Real things only, as in ``tests/test_web_client.py``: the standalone server,
Python peers (``P2PApp``), Debian Chromium driven by Playwright. Every wait is
on an event or a locator, with a timeout; the one fixed duration is how long
a finger holds the mouse button (Playwright's own ``mouse.click(delay=)``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Browser, Download, Locator, Page, expect

from p2p_nb.invite import format_invite, parse_invite
from p2p_nb.names import NameProblem, clean_name, name_key
from p2p_nb.protocol import ChatMessage
from p2p_nb.server import ServerLimits
from p2p_nb.widgets import view

from .browser import TIMEOUT, new_user
from .conftest import RunningServer, start_server
from .jupyter_server import JupyterServer
from .test_web_client import (
    ROOM,
    SECRET,
    Users,
    chat_line,
    join,
    kernel_peer,
    peer_row,
    pick_files,
    send_chat,
    transfer_row,
    wait_connected,
    wait_mesh,
)

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / ("docs" if os.environ.get("P2P_NB_UPDATE_DOCS") == "1" else "test-artifacts")
"""Where the layout test's screenshots go: docs/ (the README's) only when asked
(``P2P_NB_UPDATE_DOCS=1``), so an ordinary run leaves the tree clean."""
HOLD_MS = 150
"""How long a person holds the mouse button on a click (100-150 ms)."""


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server()
    yield running
    await running.stop()


@pytest.fixture
async def users(browser: Browser) -> AsyncIterator[Users]:
    made = Users(browser)
    yield made
    await made.close()


async def press(page: Page, button: Locator) -> None:
    """A click at human speed: mouse down on the button, held, mouse up."""
    await expect(button).to_be_visible()
    await button.scroll_into_view_if_needed()
    box = await button.bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, delay=HOLD_MS)


async def wait_bytes(page: Page, row: Locator, at_least: float) -> None:
    """Until the row's progress bar passed ``at_least`` (0..1)."""
    handle = await row.locator("progress").element_handle()
    await page.wait_for_function(
        "([p, f]) => p.value >= f", arg=[handle, at_least], timeout=TIMEOUT * 1000
    )


# --- 1, 2: cancel ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancel_held_150_ms_during_a_transfer_cancels_it(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """The row is updated in place every 100 ms: the Cancel button pressed
    for 150 ms is still the one released on, and the transfer ends."""
    kernel = await kernel_peer(server, "kernel", download_dir=tmp_path / "kernel-downloads")
    try:
        offers = kernel.events("file_offer")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        big = tmp_path / "held.bin"
        big.write_bytes(os.urandom(150 * 10**6))
        await pick_files(ada, "Files to share", big)
        offer = (await offers.get(timeout=60)).data
        await offer.accept()
        row = transfer_row(ada, "held.bin")
        await expect(row).to_have_attribute("data-state", "sending", timeout=60_000)
        await wait_bytes(ada, row, 0.02)
        cancel = row.get_by_role("button", name="Cancel held.bin")
        same = await cancel.element_handle()
        await press(ada, cancel)
        await expect(row).to_have_attribute("data-state", "cancelled")
        assert await offer.wait(timeout=TIMEOUT) == "failed"
        assert await same.evaluate("b => b.isConnected")  # the same element throughout
        await expect(cancel).to_be_hidden()
        await expect(row.locator(".transfer-state")).to_have_text("cancelled")
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_the_receiver_that_cancels_sees_one_line_not_a_flood(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """Chunks the sender put in flight before our cancel reached it arrive
    after it: expected, dropped without a word. The page shows the row,
    "cancelled", and nothing else."""
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        big = tmp_path / "flood.bin"  # below the size that asks where to save it
        big.write_bytes(os.urandom(60 * 10**6))
        share = await kernel.share_file(big)
        row = transfer_row(ada, "flood.bin")
        await row.get_by_role("button", name="Accept flood.bin").click()
        await expect(row).to_have_attribute("data-state", "receiving")
        await wait_bytes(ada, row, 0.02)
        # the click event itself (not a held press): this test is about what follows
        await row.get_by_role("button", name="Cancel flood.bin").dispatch_event("click")
        await expect(row).to_have_attribute("data-state", "cancelled")
        assert list((await share.wait(timeout=TIMEOUT)).values()) != ["done"]
        # chat goes on the same ordered channel: behind every chunk sent before it
        await kernel.send_message("after the cancel")
        await expect(chat_line(ada, "kernel", "after the cancel")).to_be_visible()
        await expect(ada.locator("#errors li")).to_have_count(0)
        await expect(ada.locator("#incoming li.transfer")).to_have_count(1)
        await expect(row.locator(".transfer-state")).to_have_text("cancelled")
    finally:
        await kernel.disconnect()


# --- 3, 7: getting back in -----------------------------------------------------------


async def leave_and_join_again(page: Page) -> None:
    await page.get_by_role("button", name="Leave").click()
    await page.get_by_role("button", name="Join again").click()
    await page.get_by_role("button", name="Join").click()
    await expect(page.get_by_role("button", name="Leave")).to_be_visible()


async def nothing_stored_for_later(page: Page, *secrets: str) -> None:
    """Credentials live in this tab's sessionStorage only: not in
    localStorage (the next user of the browser), not in a cookie (sent)."""
    local = await page.evaluate("JSON.stringify(localStorage)")
    cookies = await page.context.cookies()
    for secret in secrets:
        assert urllib.parse.quote(secret) not in local
        assert secret not in local
        assert all(secret not in c["value"] for c in cookies)


@pytest.mark.anyio
async def test_leave_join_again_and_a_reload_keep_the_token(
    server: RunningServer, users: Users
) -> None:
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await expect(ada).to_have_url(server.url)
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await leave_and_join_again(ada)
        await wait_connected(ada, "kernel")
        await ada.reload()
        await expect(ada.get_by_label("Access token (if the server asks for one)")).to_be_hidden()
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await expect(ada.locator("#errors li")).to_have_count(0)
        await nothing_stored_for_later(ada, server.token)
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_an_invite_guest_corrects_a_wrong_secret_in_place_and_reloads(
    server: RunningServer, users: Users
) -> None:
    """The link's secret is wrong (cut when pasted): the guest is told once,
    plainly, to check it, types it in place and gets in; a reload and Leave →
    Join again get back in with the invite kept for the tab."""
    host = await kernel_peer(server, "host", secret=SECRET)
    try:
        link = await host.create_invite(ttl=600)
        parsed = parse_invite(link)
        invite = parsed.token
        cut = format_invite(parsed.server_url, parsed.room, invite, "correct horse")
        guest = await users.open(cut)
        await join(guest, "guest", room=None)
        notice = guest.locator("#errors li")
        await expect(notice).to_have_count(1)
        await expect(notice).to_contain_text("check your room secret")
        await expect(peer_row(guest, "host")).to_have_count(0)  # a pseudonym: not opened
        await expect(guest.locator("#peers .peer-kind")).to_have_text([""])  # not "notebook"
        await notice.get_by_role("button", name="Change the room secret").click()
        secret = guest.get_by_label("Room secret (optional)")
        await expect(secret).to_be_visible()
        await secret.fill(SECRET)
        await guest.get_by_role("button", name="Join").click()
        await wait_connected(guest, "host")
        await expect(guest.locator("#errors li")).to_have_count(0)

        await guest.reload()
        await expect(guest.get_by_label("Room", exact=True)).to_have_value(room_of(link))
        await join(guest, "guest", room=None)
        await wait_connected(guest, "host")
        await leave_and_join_again(guest)
        await wait_connected(guest, "host")
        await nothing_stored_for_later(guest, invite, SECRET)
    finally:
        await host.disconnect()


def room_of(link: str) -> str:
    return parse_invite(link).room


@pytest.mark.anyio
async def test_a_stranger_with_another_secret_is_told_once_and_members_are_not_blamed(
    server: RunningServer, users: Users
) -> None:
    """eve has another secret, mo none: each is told once what to do; ada,
    a member, sees their rows (mo rightly as a browser) and no error."""
    kernel = await kernel_peer(server, "kernel", secret=SECRET)
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada", secret=SECRET)
        await wait_connected(ada, "kernel")
        eve = await users.open(f"{server.url}?token={server.token}")
        await join(eve, "eve", secret="not the room's secret")
        await expect(eve.locator("#errors li")).to_have_count(1)
        await expect(eve.locator("#errors")).to_contain_text("check your room secret")
        await expect(eve.locator("#peers .peer-kind")).to_have_text(["", ""])
        mo = await users.open(f"{server.url}?token={server.token}")
        await join(mo, "mo")
        await expect(mo.locator("#errors li")).to_have_count(1)
        await expect(mo.locator("#errors")).to_contain_text("This room has a room secret")
        await expect(peer_row(ada, "mo").locator(".peer-state")).to_have_text("another room secret")
        await expect(peer_row(ada, "mo").locator(".peer-kind")).to_have_text("browser")
        rows = ada.locator("#peers li.peer.mismatch")
        await expect(rows).to_have_count(2)
        await expect(ada.locator("#errors li")).to_have_count(0)
        await expect(peer_row(ada, "kernel").locator(".peer-state")).to_have_text("connected")
    finally:
        await kernel.disconnect()


# --- 4, 5, issue 17 #6: names ------------------------------------------------------------

NAMES = [
    "ada",
    "  ada  ",
    "   ",
    "",
    "e\u0301",
    "x" * 64,
    "x" * 65,
    " " + "x" * 64 + " ",
    "evil\u202etxt",
    "a\u200bb",
    "a\u2066b\u2069",
    "\ufeffbom",
    "tab\there",
    "line\u2028sep",
    "priv\ue000",
    "\u216b \uff46\uff55\uff4c\uff4c",  # a Roman numeral and fullwidth letters
    "مرحبا שלום",
    "😀" * 64,
    "😀" * 65,
]


@pytest.mark.anyio
async def test_names_js_follows_the_python_rules(server: RunningServer, users: Users) -> None:
    """names.js's cleanName gives what p2p_nb.names.clean_name gives (the
    server's and the Python client's rules), name for name."""
    page = await users.open(server.url)
    got = await page.evaluate(
        """async (names) => {
            const m = await import("/p2p/web/js/names.js");
            return names.map((n) => {
                try { return ["ok", m.cleanName(n, 64)]; } catch (e) { return ["refused", e.code]; }
            });
        }""",
        NAMES,
    )
    want = []
    for name in NAMES:
        try:
            want.append(["ok", clean_name(name, 64)])
        except NameProblem as exc:
            want.append(["refused", exc.code])
    assert got == want
    keys = [
        "Ana",
        "  ana  lu ",
        "\uff21na",
        "Stra\u00dfe",
        "STRASSE",
        "\u03a3\u03bf\u03c2",
        "\u216b",
    ]
    got_keys = await page.evaluate(
        """async (names) => {
            const m = await import("/p2p/web/js/names.js");
            return names.map((n) => m.nameKey(n));
        }""",
        keys,
    )
    assert got_keys == [name_key(k) for k in keys]


@pytest.mark.anyio
async def test_a_blank_or_long_name_and_a_long_room_are_refused_at_the_field(
    server: RunningServer, users: Users
) -> None:
    page = await users.open(f"{server.url}?token={server.token}")
    name = page.get_by_label("Your name")
    room = page.get_by_label("Room", exact=True)
    joined = page.get_by_role("button", name="Leave")
    await room.fill(ROOM)
    for typed, why in [
        ("    ", "not only spaces"),
        ("n" * 300, "at most 64 characters (this one has 300)"),
        ("evil\u202etxt", "must not contain U+202E"),
    ]:
        await name.fill(typed)
        await page.get_by_role("button", name="Join").click()
        await expect(page.locator("#name-error")).to_contain_text(why)
        await expect(name).to_have_attribute("aria-invalid", "true")
        await expect(name).to_have_value(typed)  # nothing cut
        await expect(joined).to_be_hidden()
    await name.fill("ada")
    await room.fill("r" * 300)
    await expect(room).to_have_value("r" * 300)
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#room-error")).to_contain_text(
        "at most 64 characters (this one has 300)"
    )
    await expect(page.locator("#name-error")).to_be_hidden()
    await expect(joined).to_be_hidden()
    await room.fill(ROOM)
    await page.get_by_role("button", name="Join").click()
    await expect(joined).to_be_visible()
    await expect(page.locator("#room-title")).to_have_text(f"Room {ROOM} — you are ada")


@pytest.mark.anyio
async def test_names_in_sealed_profiles_follow_the_rules(
    server: RunningServer, users: Users
) -> None:
    """In a room with a secret the server sees pseudonyms only: a member that
    seals a bidi name, or another member's name, into its profile is shown
    by its id, never with those characters or as the other member."""
    ada = await users.open(f"{server.url}?token={server.token}")
    await join(ada, "ada", room="sealed", secret=SECRET)
    mallory = await users.open(f"{server.url}?token={server.token}")
    await join(mallory, "mallory", room="sealed", secret=SECRET)
    await wait_connected(ada, "mallory")
    mallory_id = await mallory.evaluate("window.p2pClient().peerId")
    row = ada.locator(f'#peers li.peer[data-peer="{mallory_id}"] .peer-name')
    for sealed, shown in [
        ("invoice\u202efdp", f"{mallory_id} (name refused)"),
        ("a\u200bda", f"{mallory_id} (name refused)"),
        ("ADA", f"ADA ({mallory_id[:8]}, name already in use)"),
    ]:
        await mallory.evaluate(
            "async (n) => { const c = window.p2pClient(); c.name = n; await c.sendProfile(); }",
            sealed,
        )
        await expect(row).to_have_text(shown)


# --- 6: bidi -------------------------------------------------------------------------------

ISOLATED_JS = """([root, text]) => {
    // the element holding exactly `text`, and whether it (or a parent below
    // `root`) isolates it from its neighbours
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT);
    let found = null;
    for (let n = walker.currentNode; n; n = walker.nextNode()) {
        if (n.textContent === text) found = n;
    }
    if (found === null) return "missing";
    for (let n = found; n && n !== root.parentElement; n = n.parentElement) {
        const bidi = getComputedStyle(n).unicodeBidi;
        if (bidi === "isolate" || bidi === "isolate-override" || bidi === "plaintext") {
            return n.contains(root.querySelector("time")) ? "time inside" : "isolated";
        }
        if (getComputedStyle(n).display === "block" && n !== found) break;
    }
    return "not isolated";
}"""

RTL_NAME = "Ana \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd"


@pytest.mark.anyio
async def test_peer_text_is_isolated_so_an_rtl_name_leaves_the_time_in_place(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    kernel = await kernel_peer(server, RTL_NAME)
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, RTL_NAME)
        await kernel.send_message("\u05e9\u05dc\u05d5\u05dd 12")
        line = chat_line(ada, RTL_NAME, "\u05e9\u05dc\u05d5\u05dd 12")
        await expect(line).to_be_visible()
        for root, text in [
            (line, RTL_NAME),
            (line, "\u05e9\u05dc\u05d5\u05dd 12"),
            (peer_row(ada, RTL_NAME), RTL_NAME),
        ]:
            handle = await root.element_handle()
            assert await ada.evaluate(ISOLATED_JS, [handle, text]) == "isolated", text
        doc = tmp_path / "d.txt"
        doc.write_text("x")
        await kernel.share_file(doc, name="\u05e7\u05d5\u05d1\u05e5.txt")
        row = transfer_row(ada, "\u05e7\u05d5\u05d1\u05e5.txt")
        for text in ("\u05e7\u05d5\u05d1\u05e5.txt", RTL_NAME):
            handle = await row.element_handle()
            assert await ada.evaluate(ISOLATED_JS, [handle, text]) == "isolated", text
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_the_panel_isolates_peer_text(browser: Browser) -> None:
    """The ipywidgets panel's HTML (p2p_nb/widgets/view.py) in Chromium: names,
    messages and file names sit in isolating elements."""

    context = await new_user(browser)
    page = await context.new_page()
    msg = ChatMessage("\u05e9\u05dc\u05d5\u05dd", 1, 0.0, sender="p1", sender_name=RTL_NAME)
    rows = [view.PeerRow("p1", RTL_NAME, "connected", 2.0, "peer", ("messaging",))]
    parts = {
        "chat": view.chat_html([msg], me=None),
        "peers": view.peers_html(rows),
        "offer": view.offer_text(RTL_NAME, "\u05e7.txt", 3, "file", {}),
        "failed": view.failed_html("\u05e7.txt", "x"),
    }
    html = "".join(f"<div id='{k}'>{v}</div>" for k, v in parts.items())
    await page.set_content(f"<!doctype html><meta charset=utf-8><body>{html}</body>")
    for part, text in [
        ("chat", RTL_NAME),
        ("chat", "\u05e9\u05dc\u05d5\u05dd"),
        ("peers", RTL_NAME),
        ("offer", RTL_NAME),
        ("offer", "\u05e7.txt"),
        ("failed", "\u05e7.txt"),
    ]:
        handle = await page.locator(f"#{part}").element_handle()
        assert await page.evaluate(ISOLATED_JS, [handle, text]) == "isolated", (part, text)


# --- issue 17 #9: file names ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_risky_file_shows_its_saved_name_and_waits_for_a_click(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """An offer named ``invoice_\\u202Efdp.exe`` shows as what is saved,
    ``invoice_fdp.exe``, isolated; accepted, it is not downloaded by itself:
    the user clicks, warned."""
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        downloads: list[Download] = []
        ada.on("download", lambda d: downloads.append(d))
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        src = tmp_path / "payload"
        src.write_bytes(b"MZ not really")
        share = await kernel.share_file(src, name="invoice_\u202efdp.exe")
        row = transfer_row(ada, "invoice_fdp.exe")
        await expect(row.locator("bdi.file-name")).to_have_text("invoice_fdp.exe")
        await row.get_by_role("button", name="Accept invoice_fdp.exe").click()
        await expect(row).to_have_attribute("data-state", "done")
        assert list((await share.wait(timeout=TIMEOUT)).values()) == ["done"]
        save = row.get_by_role("link", name="Save invoice_fdp.exe")
        await expect(save).to_be_visible()
        await expect(row.locator(".warning")).to_contain_text("can run programs")
        async with ada.expect_download() as info:
            await save.click()
        download = await info.value
        assert download.suggested_filename == "invoice_fdp.exe"
        assert downloads == [download]  # the click's, and no other
        saved = tmp_path / "saved"
        await download.save_as(saved)
        assert saved.read_bytes() == b"MZ not really"
    finally:
        await kernel.disconnect()


# --- 8, 9, 10: what the page says ------------------------------------------------------------


@pytest.mark.anyio
async def test_one_message_per_cause_in_a_users_words(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    kernel = await kernel_peer(server, "kernel")
    try:
        # no token: one line saying what to do, no developer's "pass token=..."
        ada = await users.open(server.url)
        await ada.get_by_label("Your name").fill("ada")
        await ada.get_by_label("Room", exact=True).fill(ROOM)
        await ada.get_by_role("button", name="Join").click()
        notices = ada.locator("#errors li")
        await expect(notices).to_have_count(1)
        await expect(notices).to_contain_text("asks for an access token")
        await expect(notices).not_to_contain_text("pass token")
        await notices.get_by_role("button", name="Dismiss").click()
        await expect(notices).to_have_count(0)
        # a name someone has: said once, at the field
        await ada.get_by_label("Access token (if the server asks for one)").fill(server.token)
        await ada.get_by_label("Your name").fill("KERNEL")
        await ada.get_by_role("button", name="Join").click()
        await expect(ada.locator("#name-error")).to_contain_text("already uses this name")
        await expect(ada.get_by_role("button", name="Join")).to_be_enabled()
        await expect(notices).to_have_count(0)
        await join(ada, "ada", room=None)
        await wait_connected(ada, "kernel")

        # statuses say each thing once; a tiny file shows no rate
        tiny = tmp_path / "tiny.txt"
        tiny.write_bytes(b"x" * 49)
        declined = await kernel.share_file(tiny, name="no.txt")
        await transfer_row(ada, "no.txt").get_by_role("button", name="Decline no.txt").click()
        await declined.wait(timeout=TIMEOUT)
        await expect(transfer_row(ada, "no.txt").locator(".transfer-state")).to_have_text(
            "declined"
        )
        small = await kernel.share_file(tiny, name="yes.txt")
        async with ada.expect_download():
            await transfer_row(ada, "yes.txt").get_by_role("button", name="Accept yes.txt").click()
        await small.wait(timeout=TIMEOUT)
        await expect(transfer_row(ada, "yes.txt").locator(".transfer-state")).to_have_text("done")

        # joins and leaves appear in the conversation; the empty room says so rightly
        other = await kernel_peer(server, "bea")
        await expect(ada.locator("#chat-log li.chat-event")).to_have_text(["bea joined"])
        await other.disconnect()
        await expect(ada.locator("#chat-log li.chat-event")).to_have_text(
            ["bea joined", "bea left"]
        )
        await kernel.leave_room()
        await expect(ada.locator("#no-peers")).to_have_text("Everyone else has left.")
        await expect(notices).to_have_count(0)
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_wrong_jupyter_token_is_said_as_such(
    jupyter_server: JupyterServer, users: Users
) -> None:
    """Jupyter answers a refused WebSocket with a bare 403 ("websocket
    error" in the page): the page says what that means, once."""
    page = await users.open(f"{jupyter_server.url}p2p/join?token=not-the-token")
    await page.get_by_label("Your name").fill("ada")
    await page.get_by_label("Room", exact=True).fill(ROOM)
    await page.get_by_role("button", name="Join").click()
    notices = page.locator("#errors li")
    await expect(notices).to_have_count(1)
    await expect(notices).to_contain_text("the token is wrong or expired")
    await expect(notices).not_to_contain_text("websocket error")
    await expect(page.get_by_label("Access token (if the server asks for one)")).to_be_visible()


@pytest.mark.anyio
async def test_a_new_message_does_not_scroll_the_page_at_375_px(
    server: RunningServer, users: Users
) -> None:
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await ada.set_viewport_size({"width": 375, "height": 560})
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await ada.evaluate("window.scrollTo(0, 54)")
        await ada.wait_for_function("window.scrollY === 54")
        for i in range(3):
            await kernel.send_message(f"line {i}")
            await expect(chat_line(ada, "kernel", f"line {i}")).to_be_attached()
        assert await ada.evaluate("window.scrollY") == 54
        # the conversation itself follows the newest line
        log = ada.locator("#chat-log")
        assert await log.evaluate("l => l.scrollHeight - l.scrollTop - l.clientHeight < 2")
    finally:
        await kernel.disconnect()


@pytest.fixture
async def patient_server() -> AsyncIterator[RunningServer]:
    """A server that keeps a dropped peer's slot 30 s (default 5 s): time to look."""
    running = await start_server(limits=ServerLimits(resume_grace=30.0))
    yield running
    await running.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("cat_offers", [True, False], ids=["newcomer-offers", "newcomer-answers"])
async def test_a_peer_in_its_grace_period_shows_as_away(
    patient_server: RunningServer, users: Users, cat_offers: bool
) -> None:
    """bob's tab crashes (no goodbye): the server keeps his slot for its grace
    period. cat, arriving then, sees bob away, without an error, whichever
    of them offers: an offerer is told "reconnecting", an answerer learns it
    from the join reply (``"away": true``), since it never signals bob."""
    server = patient_server
    bob_context = await users.browser.new_context()
    await bob_context.grant_permissions(["camera", "microphone"])
    bob = await bob_context.new_page()
    await bob.goto(f"{server.url}?token={server.token}")
    await join(bob, "bob")
    bob_id = await bob.evaluate("window.p2pClient().peerId")
    await bob_context.close()  # the tab is gone, its socket cut
    with anyio.fail_after(TIMEOUT):  # the server has seen the socket close
        while bob_id not in server.service.away:
            await anyio.sleep(0.05)
    cat = await users.open(f"{server.url}?token={server.token}")
    # the smaller id offers: join until cat has the wanted one, as a user may rejoin
    for _ in range(30):
        await join(cat, "cat")
        if (await cat.evaluate("window.p2pClient().peerId") < bob_id) == cat_offers:
            break
        await cat.get_by_role("button", name="Leave").click()
        await cat.get_by_role("button", name="Join again").click()
    else:
        pytest.fail("no peer id on the wanted side of bob's in 30 joins")
    await expect(peer_row(cat, "bob").locator(".peer-state")).to_have_text("away")
    await expect(cat.locator("#errors li")).to_have_count(0)


# --- 13: layout ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_conversation_is_the_main_area_and_screenshots(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """Desktop: the conversation fills the main column, newest at the bottom,
    the message box under it, peers and files beside it. 375 px: one
    column, conversation first, peers and files folded. Screenshots of both
    go to ``SHOTS``."""
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        bob = await users.open(f"{server.url}?token={server.token}")
        await join(bob, "bob")
        await wait_connected(ada, "kernel", "bob")
        await wait_mesh([kernel], 2)
        await kernel.send_message("Here is the weather table.")
        await send_chat(bob, "Thanks! Looking now.")
        await send_chat(ada, "Got it too.")
        await expect(ada.locator("#chat-log li.chat")).to_have_count(3)
        doc = tmp_path / "notes.md"
        doc.write_text("# notes\n" * 100)
        await kernel.share_file(doc)
        await expect(transfer_row(ada, "notes.md")).to_have_attribute("data-state", "offered")

        async def box(selector: str) -> dict[str, float]:
            b = await ada.locator(selector).bounding_box()
            assert b is not None, selector
            return b

        log, message, side = await box("#chat-log"), await box("#message"), await box("#side")
        assert log["x"] + log["width"] <= side["x"]  # the conversation, then beside it
        assert log["height"] >= 0.45 * 900
        assert message["y"] >= log["y"] + log["height"]  # the box under it
        newest = await box("#chat-log li:last-child")
        assert newest["y"] + newest["height"] >= log["y"] + log["height"] - 40
        await expect(ada.locator("#chat-log li.chat").last).to_contain_text("Got it too.")
        SHOTS.mkdir(exist_ok=True)
        await ada.screenshot(path=SHOTS / "web-client.png")

        await ada.set_viewport_size({"width": 375, "height": 740})
        await expect(ada.locator("#peers-panel")).not_to_have_attribute("open", "")
        await expect(ada.locator("#files-panel")).not_to_have_attribute("open", "")
        log, side = await box("#chat-log"), await box("#side")
        assert side["y"] >= log["y"] + log["height"]
        assert await ada.evaluate("document.documentElement.scrollWidth") <= 375
        await ada.screenshot(path=SHOTS / "web-client-375.png")
        await ada.locator("#peers-panel summary").click()
        await wait_connected(ada, "kernel")
        await expect(peer_row(ada, "kernel")).to_be_visible()
    finally:
        await kernel.disconnect()
