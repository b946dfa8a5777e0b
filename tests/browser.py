"""Real JupyterLab in real headless Chromium, for tests of what users see.

A pytest plugin (listed in ``pytest_plugins`` in ``tests/conftest.py``):

- ``lab_server`` (session): ``python -m jupyterlab`` in a subprocess with the
  isolation of :mod:`tests.jupyter_server` (our extension enabled by its
  auto-enable file), base_url ``/lab-test/``.
- ``lab`` (function): ``lab_server``, plus every kernel session the test opened
  shut down afterwards, so tests do not leak kernels into each other.
- ``chromium`` (session): one Debian ``/usr/bin/chromium`` process for the
  session, started by us with a DevTools port.
- ``browser`` (function, async): a Playwright :class:`Browser` connected to that
  process over CDP.

Why two browser fixtures: Playwright's async objects belong to the event loop
that created them, and anyio's pytest plugin gives each test its own loop
(``anyio_backend`` is function-scoped), so no Playwright object can outlive a
test. The expensive part, the Chromium process, is shared; each test only
starts the Playwright driver and connects (~0.5 s). The sync Playwright API is
not an option: it refuses to run inside the anyio tests' running loop, and
browser tests need to drive kernels and peers (async) at the same time.

Tests using ``browser`` must be ``@pytest.mark.anyio`` coroutines. On failure
the ``browser`` fixture screenshots every open page into ``test-artifacts/``.
Never ``playwright install``: Chromium comes from apt (``scripts/setup.sh``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    async_playwright,
    expect,
)

from .jupyter_server import JupyterServer, run_jupyter_server, stop_popen

LAB_BASE_URL = "/lab-test/"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # What Playwright's own launch() adds and a test wants: no throttling of
    # pages that are not in front (two users = two pages at once), no extras.
    "--no-default-browser-check",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--mute-audio",
    "--hide-scrollbars",
    # WebRTC inside the loopback-only namespace (FIELD-NOTES, "Browsers as
    # peers"): plain loopback host candidates instead of mDNS names, and
    # loopback candidates at all. Only the web client's tests open peer
    # connections; real users on a LAN need neither.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT = 30.0
"""Default seconds for one browser wait; every helper takes its own ``timeout``."""


# --- servers -------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One JupyterLab for the session, on 127.0.0.1, base_url ``/lab-test/``.

    Lab's overrides (no news popup) come from ``{sys.prefix}/share/jupyter/lab/
    settings/overrides.json``, the app dir, which the isolated
    ``JUPYTER_DATA_DIR`` does not hide.
    """
    with run_jupyter_server(
        tmp_path_factory.mktemp("lab"),
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for kernel state
        "--JupyterNotebookApp.expose_app_in_browser=True",  # the same in Notebook 7
        app="jupyterlab",
        base_url=LAB_BASE_URL,
    ) as server:
        _check_no_news_popup(server)
        yield server


def _check_no_news_popup(server: JupyterServer) -> None:
    """Fail early, and clearly, if the news popup would cover the page."""
    settings = _api(server, "GET", "lab/api/settings/@jupyterlab/apputils-extension:notification")
    assert isinstance(settings, dict)
    defaults = {k: v.get("default") for k, v in settings["schema"]["properties"].items()}
    if defaults.get("fetchNews") != "false" or defaults.get("checkForUpdates") is not False:
        pytest.fail(
            "JupyterLab would show its news popup over the page: "
            f"{sys.prefix}/share/jupyter/lab/settings/overrides.json is missing or wrong "
            f"(run `bash scripts/setup.sh`); notification defaults seen: {defaults}"
        )


def _api(server: JupyterServer, method: str, path: str) -> object:
    request = urllib.request.Request(
        server.url + path, method=method, headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def session_ids(server: JupyterServer) -> set[str]:
    """Ids of the kernel sessions (open notebooks) the server has now."""
    sessions = _api(server, "GET", "api/sessions")
    assert isinstance(sessions, list)
    return {s["id"] for s in sessions}


@pytest.fixture
def lab(lab_server: JupyterServer) -> Iterator[JupyterServer]:
    """``lab_server``; the sessions (and kernels) the test started end with it."""
    before = session_ids(lab_server)
    yield lab_server
    for sid in session_ids(lab_server) - before:
        try:
            _api(lab_server, "DELETE", f"api/sessions/{sid}")
        except urllib.error.HTTPError as e:  # already gone
            if e.code != 404:
                raise


# --- notebooks -----------------------------------------------------------------


def write_notebook(root_dir: Path, path: str, sources: Sequence[str]) -> str:
    """Write a notebook of code cells at ``root_dir/path``; return ``path``.

    The metadata names the ``python3`` kernel, so JupyterLab starts it without
    asking.
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    target = root_dir / path
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return path


# --- chromium --------------------------------------------------------------------


@dataclass(frozen=True)
class ChromiumProcess:
    process: subprocess.Popen[bytes]
    cdp_url: str
    """``http://127.0.0.1:<port>``, for ``playwright.chromium.connect_over_cdp``."""
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    """Chromium writes the port it chose into ``DevToolsActivePort`` once it listens."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"chromium exited with {process.returncode}:\n{log.read_text()}")
        try:
            first_line = (profile / "DevToolsActivePort").read_text().splitlines()[0]
            return int(first_line)
        except (OSError, IndexError, ValueError):
            time.sleep(0.05)
    pytest.fail(f"chromium opened no DevTools port after {TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumProcess]:
    """One headless Chromium for the session; tests connect with ``browser``."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `bash scripts/setup.sh` (apt package chromium)")
    tmp = tmp_path_factory.mktemp("chromium")
    profile = tmp / "profile"
    log_path = tmp / "chromium.log"
    argv = [
        CHROMIUM,
        *CHROMIUM_ARGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        port = _devtools_port(profile, process, log_path)
        yield ChromiumProcess(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        stop_popen(process, grace=10)
        shutil.rmtree(profile, ignore_errors=True)


_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, for ``browser``'s failure screenshots."""
    report: pytest.TestReport = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


@pytest.fixture
async def browser(
    chromium: ChromiumProcess, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    """The session's Chromium, as a Playwright ``Browser`` on this test's loop.

    Contexts (users) the test created are closed afterwards; Chromium itself
    stays up for the next test.
    """
    async with async_playwright() as pw:
        connected = await pw.chromium.connect_over_cdp(chromium.cdp_url, timeout=TIMEOUT * 1000)
        try:
            yield connected
            reports = request.node.stash.get(_reports_key, {})
            if any(r.failed for r in reports.values()):
                name = re.sub(r"[^\w.-]+", "_", request.node.name)
                pages = [
                    p for ctx in connected.contexts for p in ctx.pages if p.url != "about:blank"
                ]
                for i, page in enumerate(pages):
                    await save_screenshot(page, f"{name}-failed-{i}")
        finally:
            await connected.close()  # over CDP: closes our contexts, disconnects


# --- pages -----------------------------------------------------------------------


async def new_user(browser: Browser) -> BrowserContext:
    """A fresh browser context: its own cookies and storage, like another person."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT * 1000)
    return context


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def notebook_panel(page: Page) -> Locator:
    """The notebook panel in front (JupyterLab hides the others)."""
    return page.locator(PANEL)


async def open_notebook(
    browser: Browser | BrowserContext,
    server: JupyterServer,
    path: str,
    timeout: float = 60.0,
) -> Page:
    """Open ``path`` in JupyterLab in a new page; return when its kernel is idle.

    Given a ``Browser``, the page gets a new context (a new user); given a
    ``BrowserContext``, it opens in that one. Each page uses its own JupyterLab
    workspace, so two pages never restore each other's notebooks.
    """
    context = await new_user(browser) if isinstance(browser, Browser) else browser
    page = await context.new_page()
    workspace = f"t{uuid.uuid4().hex[:12]}"
    await page.goto(
        f"{server.url}lab/workspaces/{workspace}/tree/{path}?token={server.token}",
        timeout=timeout * 1000,
    )
    await wait_for_kernel_idle(page, timeout)
    return page


_KERNEL_IDLE_JS = """() => {
    const widget = window.jupyterapp?.shell.currentWidget;
    const context = widget?.sessionContext;
    const kernel = context?.session?.kernel;
    return Boolean(context?.isReady && kernel
        && kernel.connectionStatus === "connected" && kernel.status === "idle");
}"""


async def wait_for_kernel_idle(page: Page, timeout: float = TIMEOUT) -> None:
    """Until the front notebook's kernel is connected and idle, and the page shows it.

    The toolbar's execution indicator alone is not enough: it says "idle"
    before the session exists (then initializing, connecting, busy, idle).
    The kernel's own state comes from ``window.jupyterapp``
    (``--LabApp.expose_app_in_browser``, set by ``lab_server``).
    """
    deadline = time.monotonic() + timeout
    await page.wait_for_function(_KERNEL_IDLE_JS, timeout=timeout * 1000, polling=100)
    indicator = notebook_panel(page).locator(".jp-Notebook-ExecutionIndicator")
    remaining = max(deadline - time.monotonic(), 1.0)
    await expect(indicator).to_have_attribute("data-status", "idle", timeout=remaining * 1000)


_CELLS_RUN_JS = """([panel, index, floor]) => {
    const cells = [...document.querySelectorAll(panel + " .jp-CodeCell")];
    const chosen = index === null ? cells : cells.slice(index, index + 1);
    return chosen.length > 0 && chosen.every((cell) => {
        const m = /\\[(\\d+)\\]/.exec(cell.querySelector(".jp-InputPrompt").textContent);
        return m !== null && Number(m[1]) > floor;
    });
}"""


async def _execution_counts(page: Page) -> list[int]:
    prompts = notebook_panel(page).locator(".jp-CodeCell .jp-InputPrompt")
    return [
        int(m[1]) for t in await prompts.all_text_contents() if (m := re.search(r"\[(\d+)\]", t))
    ]


async def _run_and_wait(page: Page, index: int | None, start: Locator, timeout: float) -> None:
    """Trigger a run with ``start``; wait until the cell(s) show a new execution count.

    New means above every count shown before, so re-running cells waits too.
    """
    floor = max(await _execution_counts(page), default=0)
    deadline = time.monotonic() + timeout
    await start.click()
    if index is not None:
        await page.keyboard.press("Shift+Enter")
    await page.wait_for_function(
        _CELLS_RUN_JS, arg=[PANEL, index, floor], timeout=timeout * 1000, polling=100
    )
    await wait_for_kernel_idle(page, max(deadline - time.monotonic(), 1.0))


async def run_all_cells(page: Page, timeout: float = 60.0) -> None:
    """Run > Run All Cells in the front notebook; return once every cell has run.

    Raises (Playwright's ``TimeoutError``) if a cell is still running at
    ``timeout``. An exception in a cell does not raise: look at the page.
    """
    await page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    await _run_and_wait(
        page, None, page.locator('.lm-Menu-item[data-command="runmenu:run-all"]'), timeout
    )


async def run_cell(page: Page, index: int, timeout: float = 60.0) -> None:
    """Run code cell ``index`` (0-based) of the front notebook (Shift+Enter)."""
    prompt = notebook_panel(page).locator(".jp-CodeCell").nth(index).locator(".jp-InputPrompt")
    await _run_and_wait(page, index, prompt, timeout)  # a prompt click selects the cell


async def wait_for_text(page: Page, text: str | re.Pattern[str], timeout: float = TIMEOUT) -> None:
    """Until ``text`` (substring or regex) is visible somewhere on the page.

    Matches rendered text, not ``<input>`` values: for those use
    ``expect(locator).to_have_value(...)``.
    """
    await expect(page.get_by_text(text).first).to_be_visible(timeout=timeout * 1000)


async def assert_no_widget_errors(page: Page) -> None:
    """No "Error displaying widget" (a model JupyterLab could not render) on the page."""
    errors = await page.get_by_text("Error displaying widget").count()
    assert errors == 0, f"{errors} widget(s) failed to display"


async def save_screenshot(page: Page, name: str) -> Path:
    """Full-page PNG at ``test-artifacts/<name>.png`` (repo root, gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=target, full_page=True)
    return target
