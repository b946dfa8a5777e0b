"""The panel in real JupyterLab, headless Debian chromium, two users."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from playwright.async_api import Browser, Page, expect

from p2p_nb.app import P2PApp
from p2p_nb.files import safe_file_name

from .browser import (
    _KERNEL_IDLE_JS,
    assert_no_widget_errors,
    notebook_panel,
    open_notebook,
    run_all_cells,
    save_screenshot,
    wait_for_text,
    write_notebook,
)
from .jupyter_server import JupyterServer

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CSV = "item,price,qty\nfirst-row-item,1.5,3\nsecond,2.5,1\nthird,9.0,7\n"


def panel_notebook(lab: JupyterServer, user: str, room: str = "browser-room") -> str:
    return write_notebook(
        lab.root_dir,
        f"panel/{user}.ipynb",
        [f'import p2p_nb\npanel = p2p_nb.ChatPanel(room="{room}", name="{user}")\npanel'],
    )


async def open_panel(browser: Browser, lab: JupyterServer, user: str) -> Page:
    page = await open_notebook(browser, lab, panel_notebook(lab, user))
    await run_all_cells(page)
    await expect(page.locator(".p2p-panel")).to_be_visible(timeout=30_000)
    return page


async def test_two_users_chat_and_share_a_csv(
    browser: Browser, lab: JupyterServer, tmp_path: Path
) -> None:
    ana, ben = await asyncio.gather(
        open_panel(browser, lab, "ana"), open_panel(browser, lab, "ben")
    )
    for page in (ana, ben):
        await wait_for_text(page, "Connected to 1 of 1 peer", timeout=30)
    await expect(ana.locator(".p2p-peers")).to_contain_text("ben")
    # both users see the same safety code for their link (no one in the middle)
    codes = []
    for page in (ana, ben):
        cell = page.locator(".p2p-peers tr[data-peer] td").last
        await expect(cell).to_have_text(re.compile(r"^\d{3} \d{3}$"))
        codes.append(await cell.inner_text())
    assert codes[0] == codes[1]

    # ana types a message and presses Enter; ben's panel shows it
    box = ana.get_by_placeholder("Type a message and press Enter")
    await box.fill("hello from ana's browser")
    await box.press("Enter")
    await expect(ben.locator(".p2p-chat")).to_contain_text("hello from ana's browser")
    await expect(ana.locator(".p2p-chat .p2p-mine")).to_contain_text("hello from ana's browser")

    # ana picks a CSV file in the panel; ben accepts, sees progress finish and a preview
    csv = tmp_path / "prices.csv"
    csv.write_text(CSV)
    async with ana.expect_file_chooser() as chooser:
        await ana.locator(".p2p-panel .widget-upload").click()
    await (await chooser.value).set_files(str(csv))
    offer = ben.locator(".p2p-offer")
    await expect(offer).to_contain_text("ana offers prices.csv", timeout=30_000)
    await offer.locator(".widget-button", has_text="Accept").click()
    await expect(ben.locator(".p2p-transfer")).to_contain_text("received prices.csv")
    await expect(ben.locator(".p2p-transfer .progress-bar-success")).to_be_visible()
    preview = ben.locator(".p2p-preview table tbody tr").first
    await expect(preview).to_contain_text("first-row-item")
    await expect(preview).to_contain_text("1.5")
    await expect(ana.locator(".p2p-transfer")).to_contain_text("sent prices.csv")
    saved = lab.root_dir / "panel" / "p2p_downloads" / "prices.csv"
    assert saved.read_text() == CSV
    # the download link is served by Jupyter itself
    link = ben.locator(".p2p-received a", has_text="prices.csv")
    href = await link.get_attribute("href")
    assert href == "/lab-test/files/panel/p2p_downloads/prices.csv"
    response = await ben.request.get(
        lab.url.split("/lab-test/")[0] + href, headers={"Authorization": f"token {lab.token}"}
    )
    assert response.ok
    assert await response.text() == CSV

    for name, page in (("ana", ana), ("ben", ben)):
        await assert_no_widget_errors(page)
        await save_screenshot(page, f"panel-{name}")
        await page.locator(".p2p-panel").screenshot(path=str(ARTIFACTS / f"panel-only-{name}.png"))
    shutil.copy(ARTIFACTS / "panel-only-ben.png", ARTIFACTS / "readme-panel.png")


async def test_notebook7_and_jupyterlab_users_chat(browser: Browser, lab: JupyterServer) -> None:
    """The panel in Notebook 7 (the classic-style UI) talking to one in JupyterLab."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    nb7 = await context.new_page()
    path = panel_notebook(lab, "nina", room="nb7-room")
    await nb7.goto(f"{lab.url}notebooks/{path}?token={lab.token}")
    await nb7.wait_for_function(_KERNEL_IDLE_JS, timeout=60_000, polling=100)
    await nb7.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-editor").first.click()
    await nb7.keyboard.press("Shift+Enter")
    await expect(nb7.locator(".p2p-panel")).to_be_visible(timeout=60_000)

    path = panel_notebook(lab, "leo", room="nb7-room")
    lab_page = await open_notebook(browser, lab, path)
    await run_all_cells(lab_page)
    for page in (nb7, lab_page):
        await wait_for_text(page, "Connected to 1 of 1 peer", timeout=30)

    box = nb7.get_by_placeholder("Type a message and press Enter")
    await box.fill("hello from Notebook 7")
    await box.press("Enter")
    await expect(lab_page.locator(".p2p-chat")).to_contain_text("hello from Notebook 7")
    box = lab_page.get_by_placeholder("Type a message and press Enter")
    await box.fill("hello from JupyterLab")
    await box.press("Enter")
    await expect(nb7.locator(".p2p-chat")).to_contain_text("hello from JupyterLab")
    await assert_no_widget_errors(nb7)
    await save_screenshot(nb7, "panel-notebook7")


# --- a hostile room member ---------------------------------------------------------

XSS_NAME = '<img src=x onerror="window.__xss=1">'
"""Markup in every text the attacker controls: run, it would set ``window.__xss``."""
XSS_FILE = f"{XSS_NAME}.csv"
SAFE_FILE = safe_file_name(XSS_FILE)
"""The file name ``share_dataframe`` gives a DataFrame called ``XSS_NAME`` (no ``<>"``)."""
XSS_REASON = '<img src=y onerror="window.__xss=2">'
XSS_PEER = '<img src=z onerror="window.__xss=3">'
XSS_SERVICE = '<img src=s onerror="window.__xss=4">'


async def test_hostile_peer_text_is_shown_never_run(
    browser: Browser, lab: JupyterServer, tmp_path: Path
) -> None:
    """Zero click: a peer's name, services, chat, offered file name and cancel reason
    reach a real panel; then, accepted, its DataFrame name and cells. None becomes
    an element: the panel shows each literally and no script runs."""
    victim = await open_notebook(browser, lab, panel_notebook(lab, "victim", room="xss-room"))
    await run_all_cells(victim)
    panel = victim.locator(".p2p-panel")
    await expect(panel).to_be_visible(timeout=30_000)
    hostile = await P2PApp.connect(lab.url, lab.token, thread=False, download_dir=tmp_path)
    try:
        await hostile.join_room(
            "xss-room", name=XSS_PEER, capabilities={"services": ["messaging", XSS_SERVICE]}
        )
        await wait_for_text(victim, "Connected to 1 of 1 peer", timeout=30)
        await hostile.send_message(f"hi {XSS_NAME}")
        await expect(victim.locator(".p2p-chat")).to_contain_text(f"hi {XSS_NAME}")
        # an offer with a hostile name, cancelled with a hostile reason: no click needed
        csv = tmp_path / "plain.csv"
        csv.write_text(f"a,b\n{XSS_NAME},2\n")
        share = await hostile.share_file(csv, name=XSS_FILE)
        await expect(victim.locator(".p2p-offer")).to_contain_text(f"offers {XSS_FILE}")
        (transfer,) = share.transfers.values()
        await transfer.cancel(reason=XSS_REASON)
        await expect(victim.locator(".p2p-transfer")).to_contain_text(
            f"{XSS_FILE} failed: cancelled by {XSS_PEER}: {XSS_REASON}"
        )
        # a DataFrame with a hostile name and cells, accepted by the user
        frame = pd.DataFrame({XSS_NAME: [XSS_REASON, "ok"]})
        await hostile.share_dataframe(frame, name=XSS_NAME, format="csv")
        offer = victim.locator(".p2p-offer")
        await expect(offer).to_contain_text(f"{XSS_PEER} offers {SAFE_FILE}")
        await offer.locator(".widget-button", has_text="Accept").click()
        await expect(victim.locator(".p2p-transfer").last).to_contain_text(f"received {XSS_NAME}")
        preview = victim.locator(".p2p-preview table")
        await expect(preview.locator("th").last).to_have_text(XSS_NAME)
        await expect(preview.locator("tbody tr").first).to_contain_text(XSS_REASON)
        await expect(victim.locator(".p2p-received")).to_contain_text(f"{XSS_NAME} from")
        await expect(victim.locator(".p2p-peers")).to_contain_text(XSS_PEER)
        await expect(victim.locator(".p2p-peers")).to_contain_text(XSS_SERVICE)
    finally:
        await hostile.disconnect()
    # the peer table is redrawn when the attacker leaves; its texts were shown, not parsed
    await expect(panel).to_contain_text("No one else is in the room yet.")
    assert await panel.locator("img, script, iframe, svg").count() == 0
    handlers = await panel.evaluate(
        "(root) => [...root.querySelectorAll('*')].flatMap("
        "(el) => el.getAttributeNames().filter((a) => a.startsWith('on')))"
    )
    assert handlers == []
    assert await victim.evaluate("typeof window.__xss") == "undefined"
    await assert_no_widget_errors(victim)
    await save_screenshot(victim, "panel-hostile-peer")


# --- the demo notebooks, as a new user runs them -------------------------------------

DEMO = Path(__file__).resolve().parent.parent / "notebooks"


async def run_chat_demo(
    browser: Browser, lab: JupyterServer, *, ana_stays: bool = False
) -> tuple[Page, Page]:
    """Open 01-chat-ana and 02-chat-ben in JupyterLab and Run All Cells in both.

    ``ana_stays``: ana's copy lacks its last cell (``panel.close()``), so her panel
    is still in the room, and listening, when ben leaves.
    """
    folder = lab.root_dir / f"demo-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    for name in ("01-chat-ana.ipynb", "02-chat-ben.ipynb"):
        nb = nbformat.read(DEMO / name, as_version=4)
        if ana_stays and name.startswith("01"):
            assert nb.cells[-1].source == "panel.close()"
            del nb.cells[-1]
        nbformat.write(nb, folder / name)
    ana, ben = await asyncio.gather(
        open_notebook(browser, lab, f"{folder.name}/01-chat-ana.ipynb"),
        open_notebook(browser, lab, f"{folder.name}/02-chat-ben.ipynb"),
    )
    await asyncio.gather(run_all_cells(ana, timeout=120), run_all_cells(ben, timeout=120))
    return ana, ben


async def test_demo_chat_notebooks_end_with_every_message_and_no_stale_peer(
    browser: Browser, lab: JupyterServer
) -> None:
    ana, ben = await run_chat_demo(browser, lab)
    for name, page in (("ana", ana), ("ben", ben)):
        chat = page.locator(".p2p-chat")
        await expect(chat).to_contain_text("hi ben, this is ana")
        await expect(chat).to_contain_text("hello ana, ben here")  # ben's own, sent in a cell
        await expect(page.locator(".p2p-status")).to_have_text("Left the room.")
        await expect(page.locator(".p2p-panel")).to_contain_text("Not in a room.")
        assert await page.locator(".p2p-peers").count() == 0  # no table, nobody "connected"
        await expect(notebook_panel(page)).not_to_contain_text("ChatMessage(")
        await assert_no_widget_errors(page)
        await save_screenshot(page, f"demo-chat-{name}")
    await expect(ana.locator(".p2p-chat .p2p-mine")).to_contain_text("hi ben, this is ana")
    await expect(ben.locator(".p2p-chat .p2p-mine")).to_contain_text("hello ana, ben here")


async def test_demo_chat_notebooks_end_without_a_false_warning(
    browser: Browser, lab: JupyterServer
) -> None:
    """ben got ana's message and answered it, then left: ana's panel, still in the
    room, must not warn that it "may not have arrived".

    Depends on the core flushing owed chat-acks on leave (outgoing.py / mesh.py)."""
    ana, ben = await run_chat_demo(browser, lab, ana_stays=True)
    await expect(ben.locator(".p2p-status")).to_have_text("Left the room.")
    await expect(ana.locator(".p2p-chat")).to_contain_text("hello ana, ben here")
    # ben's departure has been fully handled by ana's panel (undelivered comes first)
    await expect(ana.locator(".p2p-panel")).to_contain_text("No one else is in the room yet.")
    for page in (ana, ben):
        await expect(page.locator(".p2p-error")).to_have_count(0)
