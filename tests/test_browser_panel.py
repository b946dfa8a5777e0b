"""The panel in real JupyterLab, headless Debian chromium, two users."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from .browser import (
    _KERNEL_IDLE_JS,
    assert_no_widget_errors,
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
