"""The browser harness itself: stock ipywidgets in real JupyterLab, two users."""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Browser, Page, expect

from .browser import (
    assert_no_widget_errors,
    open_notebook,
    run_all_cells,
    save_screenshot,
    wait_for_text,
    write_notebook,
)
from .jupyter_server import JupyterServer

CELLS = [
    'import ipywidgets as w\nb = w.Button(description="press me")\nt = w.Text()\ndisplay(b, t)',
    'def on_click(button):\n    t.value = f"clicked by {USER}"\n\nb.on_click(on_click)',
]


@pytest.mark.anyio
async def test_two_users_click_a_stock_widget(browser: Browser, lab: JupyterServer) -> None:
    async def open_as(user: str) -> tuple[str, Page]:
        path = write_notebook(lab.root_dir, f"smoke/{user}.ipynb", [f"USER = {user!r}", *CELLS])
        started = time.monotonic()
        page = await open_notebook(browser, lab, path)  # a new context each: two users
        print(f"{user}: notebook ready in {time.monotonic() - started:.2f}s")
        return user, page

    pages = await asyncio.gather(open_as("ada"), open_as("bob"))  # both at once

    for user, page in pages:
        started = time.monotonic()
        await run_all_cells(page)
        button = page.locator(".widget-button", has_text="press me")
        await expect(button).to_be_visible(timeout=10_000)
        print(f"{user}: cells run, widget shown in {time.monotonic() - started:.2f}s")

    for user, page in pages:
        started = time.monotonic()
        await page.locator(".widget-button", has_text="press me").click()
        await expect(page.locator(".widget-text input")).to_have_value(
            f"clicked by {user}", timeout=10_000
        )
        print(f"{user}: click answered in {time.monotonic() - started:.2f}s")
        await wait_for_text(page, "press me")
        await assert_no_widget_errors(page)
        await save_screenshot(page, f"browser-smoke-{user}")
