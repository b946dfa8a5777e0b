"""The web client (p2p_nb/web): a plain browser as a full peer of the room.

Real things only: the standalone server (or JupyterLab with the extension),
Python peers (``P2PApp``, what a kernel runs), and Debian Chromium driven by
Playwright (``tests/browser.py``). Every wait is on an event or a locator,
with a timeout.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from p2p_nb.app import P2PApp
from p2p_nb.errors import P2PTimeoutError
from p2p_nb.invite import client_link
from p2p_nb.links import MeshSettings, ReconnectPolicy
from p2p_nb.web import STATIC_DIR, VENDOR_DIR, render_page, vendored_files

from .browser import TIMEOUT, new_user, save_screenshot
from .conftest import RunningServer, start_server
from .jupyter_server import JupyterServer
from .vectors import VECTORS_FILE

UNIT_DIR = Path(__file__).resolve().parent / "web"
ROOM = "webroom"


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server()
    yield running
    await running.stop()


async def kernel_peer(
    server: RunningServer | JupyterServer,
    name: str,
    room: str = ROOM,
    *,
    secret: str | None = None,
    **connect: Any,
) -> P2PApp:
    """A Python peer, as a notebook's kernel runs it (on this test's loop)."""
    app = await P2PApp.connect(server.url, server.token, thread=False, **connect)
    try:
        await app.join_room(room, name=name, secret=secret)
    except BaseException:
        await app.disconnect()
        raise
    return app


async def web_user(browser: Browser) -> BrowserContext:
    """A new user whose pages may gather loopback ICE candidates.

    Chromium enumerates only the default route's interface for a page
    without camera or microphone permission; the test namespace has no
    default route, so it would offer no candidate at all and two browsers
    could never connect (a Python peer still can: it learns the browser's
    address from its checks). A user on a LAN has a default route."""
    context = await new_user(browser)
    await context.grant_permissions(["camera", "microphone"])
    return context


class Users:
    """The browser users of one test; their pages close before the servers stop
    (an open WebSocket would hold the server's shutdown up)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []

    async def open(self, url: str) -> Page:
        """The web client at ``url``, for a new user."""
        context = await web_user(self.browser)
        self.contexts.append(context)
        return await open_client(context, url)

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def users(browser: Browser) -> AsyncIterator[Users]:
    made = Users(browser)
    yield made
    await made.close()


async def open_client(browser: Browser | BrowserContext, url: str) -> Page:
    """The web client at ``url`` in a new user's context (or in ``browser``, a context)."""
    ctx = await web_user(browser) if isinstance(browser, Browser) else browser
    page = await ctx.new_page()
    page.on("console", lambda m: print(f"[{page.url.split('?')[0]}] {m.type}: {m.text}"))
    page.on("pageerror", lambda e: print(f"page error: {e}"))
    await page.goto(url)
    return page


async def join(page: Page, name: str, room: str | None = ROOM, secret: str | None = None) -> None:
    """Fill the form the way a person does (labels, not selectors) and join."""
    await page.get_by_label("Your name").fill(name)
    if room is not None:
        await page.get_by_label("Room", exact=True).fill(room)
    if secret is not None:
        await page.get_by_label("Room secret (optional)").fill(secret)
    await page.get_by_role("button", name="Join").click()
    await expect(page.get_by_role("button", name="Leave")).to_be_visible(timeout=TIMEOUT * 1000)


def peer_row(page: Page, name: str) -> Locator:
    return page.locator("#peers li.peer").filter(
        has=page.locator(".peer-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


async def wait_connected(page: Page, *names: str, timeout: float = TIMEOUT) -> None:
    for name in names:
        row = peer_row(page, name)
        await expect(row.locator(".peer-state")).to_have_text("connected", timeout=timeout * 1000)


async def send_chat(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


def chat_line(page: Page, sender: str, text: str) -> Locator:
    return page.locator("#chat-log li").filter(has_text=sender).filter(has_text=text)


async def wait_mesh(apps: list[P2PApp], count: int, timeout: float = TIMEOUT) -> None:
    """Until each Python peer has ``count`` connected links."""
    import anyio

    with anyio.fail_after(timeout):
        while any(len(app.connected_peers()) < count for app in apps):
            async with apps[0].events("peer_connected", "peer_state") as events:
                if all(len(app.connected_peers()) >= count for app in apps):
                    break
                with anyio.move_on_after(0.5):
                    await events.get()


# --- no browser ----------------------------------------------------------------


def test_vendored_files_match_their_recorded_sha256() -> None:
    """Third-party JavaScript is pinned: a changed or added file fails here."""
    recorded = vendored_files()
    on_disk = {
        str(p.relative_to(VENDOR_DIR))
        for p in VENDOR_DIR.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "README.md")
    }
    assert set(recorded) == on_disk
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR_DIR / name).read_bytes()).hexdigest() == digest, name
    readme = (VENDOR_DIR / "README.md").read_text()
    assert "socket.io-client` | 4.8.4" in readme
    assert "@noble/hashes` | 1.8.0" in readme
    for licence in ("socket.io-client/LICENSE", "noble-hashes/LICENSE"):
        assert licence in recorded


@pytest.mark.anyio
async def test_the_standalone_server_serves_the_page_and_its_files(server: RunningServer) -> None:
    def get(path: str) -> tuple[int, dict[str, str], bytes]:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status, dict(response.headers), response.read()

    import anyio

    for path in ("", "p2p/join", "p2p/join?room=r&invite=inv1.x"):
        status, headers, body = await anyio.to_thread.run_sync(get, path)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-store"
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        page = body.decode()
        assert '"socketPath": "/p2p/socket.io/"' in page
        assert '"host": "standalone"' in page
        assert 'src="/p2p/web/js/ui.js"' in page
    status, headers, body = await anyio.to_thread.run_sync(get, "p2p/web/js/codec.js")
    assert status == 200
    assert "javascript" in headers["Content-Type"]
    assert body == (STATIC_DIR / "js" / "codec.js").read_bytes()
    with pytest.raises(urllib.error.HTTPError) as refused:
        await anyio.to_thread.run_sync(get, "p2p/web/../__init__.py")
    assert refused.value.code in (403, 404)
    refused.value.close()


# --- JS unit tests ---------------------------------------------------------------


@pytest.mark.anyio
async def test_js_modules_unit_tests_in_chromium(browser: Browser, server: RunningServer) -> None:
    """codec, safety code, room key, relay and rekey (docs/vectors.json, which
    tests/test_vectors.py holds p2p_nb to as well) and transfer state, in the
    browser that runs them for users."""
    context = await new_user(browser)
    page = await context.new_page()
    unit_js = (UNIT_DIR / "unit.js").read_text()
    html = (
        '<!doctype html><meta charset="utf-8"><script type="importmap">'
        '{"imports": {"@noble/hashes/crypto": "/p2p/web/vendor/noble-hashes/crypto.js"}}'
        '</script><script type="module" src="/__unit__.js"></script>'
    )
    await page.route(
        server.url + "__unit__.html", lambda r: r.fulfill(body=html, content_type="text/html")
    )
    await page.route(
        server.url + "__unit__.js",
        lambda r: r.fulfill(body=unit_js, content_type="text/javascript"),
    )
    vectors = VECTORS_FILE.read_text(encoding="utf-8")
    await page.route(
        server.url + "__vectors__.json",
        lambda r: r.fulfill(body=vectors, content_type="application/json"),
    )
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(server.url + "__unit__.html")
    await page.wait_for_function("window.done === true", timeout=60_000)
    results = await page.evaluate("window.results")
    assert not errors, errors
    failed = [r for r in results if not r["ok"]]
    assert not failed, "\n".join(f"{r['name']}: {r['error']}" for r in failed)
    assert len(results) >= 15, [r["name"] for r in results]


# --- chat --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_browsers_and_a_kernel_chat_in_every_direction(
    server: RunningServer, users: Users
) -> None:
    kernel = await kernel_peer(server, "kernel")
    mallory = await kernel_peer(server, '<img src=x onerror="window.owned=1">')
    try:
        inbox = kernel.events("message")
        ada = await users.open(f"{server.url}?token={server.token}")
        # the token is read, then gone from the address bar and the history
        await expect(ada).to_have_url(server.url)
        await expect(ada.get_by_label("Access token (if the server asks for one)")).to_be_hidden()
        await join(ada, "ada")
        bob = await users.open(server.url)
        await bob.get_by_label("Access token (if the server asks for one)").fill(server.token)
        await join(bob, "bob")

        await wait_connected(ada, "kernel", "bob")
        await wait_connected(bob, "kernel", "ada")
        await expect(peer_row(ada, "kernel").locator(".peer-kind")).to_have_text("notebook")
        await expect(peer_row(ada, "bob").locator(".peer-kind")).to_have_text("browser")
        await expect(peer_row(ada, "kernel").locator(".peer-code")).to_have_text(
            re.compile(r"^code \d{3} \d{3}$")
        )
        await expect(peer_row(ada, "kernel").locator(".peer-rtt")).to_have_text(
            re.compile(r"^\d+ ms$")
        )
        await wait_mesh([kernel], 3)
        peers = kernel.peers
        assert {"ada", "bob"} <= {p.name for p in peers.values()}
        # a hostile name is text on the page, never markup
        await wait_connected(ada, '<img src=x onerror="window.owned=1">')
        assert await ada.locator("#peers img, #send-to img").count() == 0
        ada_id = next(pid for pid, p in peers.items() if p.name == "ada")
        await mallory.send_message(
            '<script>window.owned=1</script><img src=x onerror="window.owned=1">', to=ada_id
        )
        await expect(ada.locator("#chat-log li.chat")).to_have_count(1)
        assert await ada.locator("#chat-log img, #chat-log script").count() == 0
        assert await ada.evaluate("window.owned") is None
        # the same safety code on both ends of each kernel-browser link
        for name, page in (("ada", ada), ("bob", bob)):
            pid = next(pid for pid, p in peers.items() if p.name == name)
            code = kernel.connection_status(pid).safety_code
            assert code is not None
            await expect(peer_row(page, "kernel").locator(".peer-code")).to_have_text(
                f"code {code}"
            )
            browser_caps = kernel.remote_capabilities(pid)
            assert "browser" in browser_caps.services

        # browser -> everyone
        await send_chat(ada, "hello from ada <b>not bold</b>")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("ada", "hello from ada <b>not bold</b>")
        await expect(chat_line(bob, "ada", "hello from ada <b>not bold</b>")).to_be_visible()
        assert await bob.locator("#chat-log b").count() == 0  # text, never markup
        own = chat_line(ada, "ada (you)", "hello from ada")
        await expect(own).to_have_class(re.compile(r"\bown\b"))
        # kernel -> browsers
        await kernel.send_message("hi browsers, from the kernel")
        for page in (ada, bob):
            await expect(chat_line(page, "kernel", "hi browsers, from the kernel")).to_be_visible()
        # the other browser -> everyone, with the Send button
        await bob.get_by_label("Message").fill("bob here")
        await bob.get_by_role("button", name="Send").click()
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("bob", "bob here")
        await expect(chat_line(ada, "bob", "bob here")).to_be_visible()
        # a private message from a browser to the kernel only
        await bob.get_by_label("Send to").select_option(label="kernel")
        await send_chat(bob, "just for the kernel")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert got.text == "just for the kernel"
        assert got.to == kernel.peer_id
        await kernel.send_message("and a reply")
        await expect(chat_line(ada, "kernel", "and a reply")).to_be_visible()
        assert await chat_line(ada, "bob", "just for the kernel").count() == 0
        # at 375 px wide the page still fits
        await ada.set_viewport_size({"width": 375, "height": 800})
        widest = await ada.evaluate(
            """() => [...document.querySelectorAll("body *")]
                .filter((e) => e.getBoundingClientRect().right > 376)
                .map((e) => e.tagName + "#" + e.id + "." + e.className)"""
        )
        assert widest == []
        assert await ada.evaluate("document.documentElement.scrollWidth") <= 375
        await save_screenshot(ada, "web-client-chat-375px")

        # Leave: the kernel sees the browser go
        left = kernel.events("peer_left")
        await ada.get_by_role("button", name="Leave").click()
        gone = await left.get(timeout=TIMEOUT)
        assert gone.data.get("name", "ada") == "ada" or gone.peer_id not in kernel.peers
        await expect(peer_row(bob, "ada")).to_have_count(0)
    finally:
        await mallory.disconnect()
        await kernel.disconnect()


# --- files ---------------------------------------------------------------------------


async def pick_files(page: Page, label: str, *paths: Path) -> None:
    """Choose local files in the file input labelled ``label``, as a person does.

    Through DevTools' ``DOM.setFileInputFiles`` with the paths: Chromium reads
    the files itself (it runs on this machine). Playwright's
    ``set_input_files`` over a CDP connection would copy the bytes through the
    protocol, which times out for a 50 MB file."""
    await expect(page.get_by_label(label)).to_be_visible()
    cdp = await page.context.new_cdp_session(page)
    try:
        label_for = await page.get_by_label(label).get_attribute("id")
        document = await cdp.send("DOM.getDocument", {"depth": 0})
        node = await cdp.send(
            "DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": f"#{label_for}"}
        )
        await cdp.send(
            "DOM.setFileInputFiles",
            {"nodeId": node["nodeId"], "files": [str(p) for p in paths]},
        )
    finally:
        await cdp.detach()


def transfer_row(page: Page, name: str) -> Locator:
    return page.locator("li.transfer").filter(
        has=page.locator(".file-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


@pytest.mark.anyio
async def test_files_both_ways_a_50_mb_file_to_the_kernel_and_a_dataframe_back(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """A 50 MB file from a browser (picked with the file input) arrives in the
    kernel with its SHA-256; a DataFrame from the kernel arrives in the
    browser as its Parquet file, through a download, after Accept."""
    kernel = await kernel_peer(server, "kernel", download_dir=tmp_path / "kernel-downloads")
    try:
        offers = kernel.events("file_offer")
        received = kernel.events("file_received")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")

        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(50 * 10**6))
        want = hashlib.sha256(big.read_bytes()).hexdigest()
        await pick_files(ada, "Files to share", big)
        offer = (await offers.get(timeout=TIMEOUT)).data
        assert (offer.name, offer.size) == ("big.bin", big.stat().st_size)
        assert offer.offer.sha256 == want
        await offer.accept()
        got = (await received.get(timeout=120)).data
        assert got.sha256 == want
        assert hashlib.sha256(got.path.read_bytes()).hexdigest() == want
        row = transfer_row(ada, "big.bin")
        await expect(row).to_have_attribute("data-state", "done")
        await expect(row.locator(".transfer-state")).to_have_text(re.compile(r"^done, .+/s$"))
        assert await row.locator("progress").evaluate("p => p.value") == 1

        df = pd.DataFrame({"city": ["Oslo", "Lima", "<b>Pune</b>"], "temp": [3.5, 19.0, 31.25]})
        await kernel.share_dataframe(df, name="weather")
        row = transfer_row(ada, "weather.parquet")
        await expect(row.locator(".file-peer")).to_have_text("from kernel")
        await expect(row.locator(".meta")).to_contain_text("DataFrame shape 3 \u00d7 2, parquet")
        await expect(row.locator(".columns li")).to_have_text(
            [f"{c}: {t}" for c, t in zip(df.columns, df.dtypes, strict=True)]
        )
        async with ada.expect_download(timeout=TIMEOUT * 1000) as download_info:
            await row.get_by_role("button", name="Accept weather.parquet").click()
        download = await download_info.value
        assert download.suggested_filename == "weather.parquet"
        saved = tmp_path / "weather.parquet"
        await download.save_as(saved)
        pd.testing.assert_frame_equal(pd.read_parquet(saved), df)
        await expect(row).to_have_attribute("data-state", "done")
        await expect(row.get_by_role("link", name="Save weather.parquet again")).to_be_visible()
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_browser_declines_and_cancels(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """Decline on an offer reaches the sender; Cancel during a transfer ends it on both sides."""
    kernel = await kernel_peer(server, "kernel", download_dir=tmp_path / "kernel-downloads")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        small = tmp_path / "notes.txt"
        small.write_text("not wanted")
        share = await kernel.share_file(small)
        row = transfer_row(ada, "notes.txt")
        await row.get_by_role("button", name="Decline notes.txt").click()
        outcome = await share.wait(timeout=TIMEOUT)
        assert list(outcome.values()) == ["declined"]
        await expect(row).to_have_attribute("data-state", "declined")

        # a flood of offers: the browser keeps 16 of one sender's pending and
        # declines the rest, which never reach the page
        tiny = tmp_path / "tiny.txt"
        tiny.write_text("x")
        shares = [await kernel.share_file(tiny, name=f"flood-{i}.txt") for i in range(20)]
        outcomes = [next(iter((await s.wait(timeout=TIMEOUT)).values())) for s in shares[16:]]
        assert outcomes == ["declined"] * 4
        assert await ada.locator("#incoming li.transfer").count() == 1 + 16
        await expect(transfer_row(ada, "flood-15.txt")).to_have_attribute("data-state", "offered")
        assert await transfer_row(ada, "flood-16.txt").count() == 0

        # the browser sends; the kernel accepts; the browser cancels midway
        offers = kernel.events("file_offer")
        failed = kernel.events("transfer_failed")
        big = tmp_path / "cancel-me.bin"
        big.write_bytes(os.urandom(40 * 10**6))
        await pick_files(ada, "Files to share", big)
        offer = (await offers.get(timeout=TIMEOUT)).data
        await offer.accept()
        row = transfer_row(ada, "cancel-me.bin")
        await expect(row).to_have_attribute("data-state", "sending")
        await row.get_by_role("button", name="Cancel cancel-me.bin").click()
        await expect(row).to_have_attribute("data-state", "cancelled")
        assert await offer.wait(timeout=TIMEOUT) == "failed"
        reason = (await failed.get(timeout=TIMEOUT)).data["reason"]
        assert reason == "cancelled by ada: cancelled"
        assert not list((tmp_path / "kernel-downloads").glob("cancel-me*"))
    finally:
        await kernel.disconnect()


# --- rooms with a secret, invites ----------------------------------------------------

SECRET = "correct horse battery staple, but longer"


@pytest.mark.anyio
async def test_a_room_with_a_secret_from_the_browser(server: RunningServer, users: Users) -> None:
    """The browser derives the room key (scrypt in JS), authenticates its
    descriptions and seals its profile: the kernel sees its real name, the
    server only a pseudonym; a browser with another secret is refused."""
    kernel = await kernel_peer(server, "kernel", secret=SECRET)
    try:
        inbox = kernel.events("message")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada", secret=SECRET)
        await wait_connected(ada, "kernel")
        await expect(peer_row(ada, "kernel").locator(".peer-code")).to_have_text(
            re.compile(r"^code \d{3} \d{3}$")
        )
        await wait_mesh([kernel], 1)
        assert [p.name for p in kernel.peers.values()] == ["ada"]
        names_on_server = {p.name for p in server.service.peers.values() if p.peer_id}
        assert "ada" not in names_on_server
        assert "kernel" not in names_on_server
        assert all(name.startswith("member-") for name in names_on_server)
        await send_chat(ada, "sealed hello")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("ada", "sealed hello")
        await kernel.send_message("sealed reply")
        await expect(chat_line(ada, "kernel", "sealed reply")).to_be_visible()

        errors = kernel.events("error")
        eve = await users.open(f"{server.url}?token={server.token}")
        await join(eve, "eve", secret="not the room's secret")
        # eve cannot open the members' profiles (she sees pseudonyms) and every
        # link is refused by the authenticator, never opened; she is told once
        states = eve.locator("#peers li.peer .peer-state")
        await expect(states).to_have_text(["another room secret"] * 2)
        await expect(eve.locator("#peers .peer-name")).to_have_text(
            [re.compile(r"^member-[0-9a-f]{8}$")] * 2
        )
        await expect(eve.locator("#errors li")).to_have_count(1)
        await expect(eve.locator("#errors")).to_contain_text("check your room secret")
        error = (await errors.get(timeout=TIMEOUT)).data
        assert type(error).__name__ == "RoomSecretError"
        assert "eve" not in [p.name for p in kernel.peers.values()]
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_an_invite_link_to_a_jupyter_hosted_room(
    jupyter_server: JupyterServer, users: Users
) -> None:
    """A guest with only the invite link (room, token and the secret after #)
    joins a room on a Jupyter server: the page at {base_url}p2p/join, the
    socket opened with the invite, confined to its room; Jupyter's own URLs
    still refuse the invite."""
    kernel = await P2PApp.connect(jupyter_server.url, jupyter_server.token, thread=False)
    try:
        await kernel.join_room("lab-web", name="host", secret=SECRET)
        link = await kernel.create_invite(ttl=600)
        assert link.startswith(jupyter_server.url + "p2p/join#room=lab-web&invite=inv1.")
        token = re.search(r"invite=([^&#]+)", link)
        assert token is not None
        inbox = kernel.events("message")

        context = await web_user(users.browser)
        users.contexts.append(context)
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        guest = await open_client(context, link)
        # straight into the room: no room or secret to type, and neither the
        # invite nor the secret stays in the address bar
        await expect(guest).to_have_url(jupyter_server.url + "p2p/join")
        await expect(guest.get_by_label("Room", exact=True)).to_have_value("lab-web")
        await expect(guest.get_by_label("Room secret (optional)")).to_be_hidden()
        await join(guest, "guest", room=None)
        await wait_connected(guest, "host")
        await send_chat(guest, "hello from the invite")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("guest", "hello from the invite")
        await kernel.send_message("welcome, guest")
        await expect(chat_line(guest, "host", "welcome, guest")).to_be_visible()
        # the invite and the secret travel in the fragment: the page's own
        # request (what a proxy logs) carries neither; only the WebSocket has
        # the invite, as ?invite_token= (Jupyter scrubs it from its logs)
        assert requests[0] == jupyter_server.url + "p2p/join"
        assert not any(SECRET in urllib.parse.unquote(url) for url in requests)
        assert [u for u in requests if token.group(1) in u and "/p2p/socket.io/" not in u] == []

        # a Jupyter user comes with the server's own token (?token=, as Jupyter
        # prints it), types the room and its secret, and meets both
        member = await users.open(f"{jupyter_server.url}p2p/join?token={jupyter_server.token}")
        await expect(member).to_have_url(jupyter_server.url + "p2p/join")
        await join(member, "member", room="lab-web", secret=SECRET)
        await wait_connected(member, "host", "guest")
        await send_chat(member, "a Jupyter user says hi")
        await expect(chat_line(guest, "member", "a Jupyter user says hi")).to_be_visible()

        # the invite opens the p2p socket and the invite check, nothing else
        def status(path: str) -> int:
            request = urllib.request.Request(jupyter_server.url + path)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                exc.close()
                return int(exc.code)

        import anyio

        invite = urllib.parse.unquote(token.group(1))
        query = urllib.parse.urlencode({"invite_token": invite})
        assert await anyio.to_thread.run_sync(status, f"p2p/invite?{query}") == 200
        for path in ("api/contents", "api/kernels", "p2p/health"):
            assert await anyio.to_thread.run_sync(status, f"{path}?{query}") == 403, path
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_logged_in_jupyter_user_needs_no_token(
    jupyter_server: JupyterServer, users: Users
) -> None:
    """A user who logged in to Jupyter (its login page, the token typed once)
    opens {base_url}p2p/join with nothing in the address: the login cookie
    opens the p2p socket, and they chat with a kernel. Without the login, the
    same page is refused and says to log in."""
    kernel = await kernel_peer(jupyter_server, "kernel", "lab-cookie")
    try:
        inbox = kernel.events("message")

        stranger = await users.open(f"{jupyter_server.url}p2p/join")
        await join_fails(stranger, "stranger", room="lab-cookie")
        await expect(stranger.locator("#errors")).to_contain_text("log in")

        context = await web_user(users.browser)
        users.contexts.append(context)
        login = await context.new_page()
        await login.goto(f"{jupyter_server.url}login")
        await login.get_by_role("textbox", name="Password or token:").fill(jupyter_server.token)
        await login.get_by_role("button", name="Log in").first.click()
        await login.wait_for_url(lambda url: "/login" not in url, timeout=TIMEOUT * 1000)
        assert any(c["name"].startswith("username-") for c in await context.cookies())
        user = await open_client(context, f"{jupyter_server.url}p2p/join")
        await join(user, "lab-user", room="lab-cookie")
        await wait_connected(user, "kernel")
        await send_chat(user, "logged in, no token")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("lab-user", "logged in, no token")
        await kernel.send_message("hello, lab user")
        await expect(chat_line(user, "kernel", "hello, lab user")).to_be_visible()
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_browser_to_browser_file_dropped_for_one_peer(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """A file dropped on the page goes to the peer chosen under "Send to" only:
    browser to browser, through a download, with both sides' progress."""
    kernel = await kernel_peer(server, "kernel")
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        bob = await users.open(f"{server.url}?token={server.token}")
        await join(bob, "bob")
        await wait_connected(ada, "kernel", "bob")
        await wait_connected(bob, "kernel", "ada")
        await ada.get_by_label("Send to").select_option(label="bob")
        # 3 MB of random bytes made in the page (handing them over from here
        # would cost a JSON array of 3 million numbers); their SHA-256 comes back
        want = await ada.evaluate(
            """async () => {
                const bytes = new Uint8Array(3e6);
                for (let i = 0; i < bytes.length; i += 65536) {
                    crypto.getRandomValues(bytes.subarray(i, i + 65536));
                }
                const data = new DataTransfer();
                data.items.add(new File([bytes], "dropped.bin"));
                const zone = document.getElementById("drop-zone");
                for (const type of ["dragover", "drop"]) {
                    const init = {dataTransfer: data, bubbles: true, cancelable: true};
                    zone.dispatchEvent(new DragEvent(type, init));
                }
                const digest = await crypto.subtle.digest("SHA-256", bytes);
                const hex = (b) => b.toString(16).padStart(2, "0");
                return [...new Uint8Array(digest)].map(hex).join("");
            }"""
        )
        row = transfer_row(bob, "dropped.bin")
        await expect(row.locator(".file-peer")).to_have_text("from ada")
        await expect(row.locator(".file-size")).to_have_text("3.0 MB")
        async with bob.expect_download(timeout=TIMEOUT * 1000) as download_info:
            await row.get_by_role("button", name="Accept dropped.bin").click()
        download = await download_info.value
        saved = tmp_path / "dropped.bin"
        await download.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == want
        await expect(row.locator(".transfer-state")).to_have_text(re.compile(r"^done, .+/s$"))
        sent = transfer_row(ada, "dropped.bin")
        await expect(sent.locator(".file-peer")).to_have_text("to bob")
        await expect(sent).to_have_attribute("data-state", "done")
        assert kernel.incoming_transfers == []  # the kernel was not offered it
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_link_to_a_browser_comes_back_after_it_is_cut(
    server: RunningServer, users: Users
) -> None:
    """The kernel's link to the browser fails (its peer connection closes, as
    a network failure would): both ends show it reconnecting, it comes back
    (whichever end offers), and chat works again, nothing lost or doubled."""
    kernel = await kernel_peer(server, "kernel")
    try:
        inbox = kernel.events("message")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await wait_mesh([kernel], 1)
        pid = next(iter(kernel.peers))
        states = kernel.events("peer_state")
        await kernel._require_mesh().links[pid].cut()
        seen: list[str] = []
        while "connected" not in seen[1:]:
            event = await states.get(timeout=TIMEOUT)
            seen.append(event.data["new"])
        assert seen[0] == "reconnecting"
        await wait_connected(ada, "kernel")
        await send_chat(ada, "after the cut")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert got.text == "after the cut"
        await kernel.send_message("still here")
        await expect(chat_line(ada, "kernel", "still here")).to_have_count(1)
    finally:
        await kernel.disconnect()


async def cut_when(app: P2PApp, peer_id: str, name: str, at: int) -> None:
    """Cut ``app``'s link to ``peer_id`` once the transfer of ``name`` passed ``at`` bytes."""
    async with app.events("file_progress") as progress:
        while True:
            data = (await progress.get(timeout=TIMEOUT)).data
            if data["name"] == name and data["bytes"] >= at:
                break
    await app._require_mesh().links[peer_id].cut()


@pytest.mark.anyio
async def test_transfers_with_a_browser_resume_across_a_cut_link(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """A link cut in the middle of a transfer, either way: both ends keep the
    transfer, the sender offers it again as a resume when the link is back,
    and it finishes from where it was, SHA-256 intact."""
    kernel = await kernel_peer(server, "kernel", download_dir=tmp_path / "kernel-downloads")
    try:
        offers = kernel.events("file_offer")
        received = kernel.events("file_received")
        interrupted = kernel.events("transfer_interrupted")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await wait_mesh([kernel], 1)
        ada_id = next(iter(kernel.peers))

        up = tmp_path / "up.bin"
        up.write_bytes(os.urandom(30 * 10**6))
        await pick_files(ada, "Files to share", up)
        offer = (await offers.get(timeout=TIMEOUT)).data
        await offer.accept()
        await cut_when(kernel, ada_id, "up.bin", 10 * 10**6)
        assert (await interrupted.get(timeout=TIMEOUT)).data["name"] == "up.bin"
        got = (await received.get(timeout=120)).data
        assert (
            hashlib.sha256(got.path.read_bytes()).hexdigest()
            == hashlib.sha256(up.read_bytes()).hexdigest()
        )
        await expect(transfer_row(ada, "up.bin")).to_have_attribute("data-state", "done")

        down = tmp_path / "down.bin"
        down.write_bytes(os.urandom(30 * 10**6))
        share = await kernel.share_file(down)
        row = transfer_row(ada, "down.bin")
        async with ada.expect_download(timeout=120_000) as download_info:
            await row.get_by_role("button", name="Accept down.bin").click()
            await cut_when(kernel, ada_id, "down.bin", 10 * 10**6)
        assert (await interrupted.get(timeout=TIMEOUT)).data["name"] == "down.bin"
        download = await download_info.value
        saved = tmp_path / "down-saved.bin"
        await download.save_as(saved)
        assert saved.read_bytes() == down.read_bytes()
        assert await share.wait(timeout=TIMEOUT) == {ada_id: "done"}
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_browser_takes_its_place_back_after_its_signaling_connection_drops(
    server: RunningServer, users: Users
) -> None:
    """The page's WebSocket to the server closes (a network blip): Socket.IO
    reconnects, the page joins again with its resume secret and keeps its peer
    id; the room never hears it left, and signaling works again (a link cut
    afterwards is re-established through it)."""
    kernel = await kernel_peer(server, "kernel")
    try:
        left = kernel.events("peer_left")
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        await wait_mesh([kernel], 1)
        ada_id = next(iter(kernel.peers))
        rejoined = ada.wait_for_function(
            "(old) => window.p2pClient().socket.id !== old && window.p2pClient().rejoined > 0",
            arg=await ada.evaluate("window.p2pClient().socket.id"),
            timeout=TIMEOUT * 1000,
        )
        await ada.evaluate("window.p2pClient().socket.io.engine.close()")
        await rejoined
        assert await ada.evaluate("window.p2pClient().peerId") == ada_id
        await expect(ada.locator("#connection")).to_have_text("")
        states = kernel.events("peer_state")
        await kernel._require_mesh().links[ada_id].cut()
        seen: list[str] = []
        while "connected" not in seen:
            seen.append((await states.get(timeout=TIMEOUT)).data["new"])
        assert seen[0] == "reconnecting"
        await wait_connected(ada, "kernel")
        await kernel.send_message("still in touch")
        await expect(chat_line(ada, "kernel", "still in touch")).to_be_visible()
        with pytest.raises(P2PTimeoutError):
            await left.get(timeout=0.1)
    finally:
        await kernel.disconnect()


OPFS_PICKER = """
// The save dialog, answered with a file of the origin's private file system
// (a headless browser has no dialog): the same FileSystemWritableFileStream
// a user's choice gives.
window.p2pStreamToDiskBytes = 1024 * 1024;
window.showSaveFilePicker = async ({ suggestedName }) => {
    const root = await navigator.storage.getDirectory();
    return root.getFileHandle(suggestedName, { create: true });
};
"""


@pytest.mark.anyio
async def test_a_big_file_is_streamed_to_disk_where_the_browser_can(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """With the File System Access API, a big incoming file is written to the
    place the user picked as it arrives (acknowledged once written) and gets
    its name only after its SHA-256 matched: no download, no copy in memory."""
    kernel = await kernel_peer(server, "kernel")
    try:
        context = await web_user(users.browser)
        users.contexts.append(context)
        await context.add_init_script(OPFS_PICKER)
        ada = await open_client(context, f"{server.url}?token={server.token}")
        downloads: list[object] = []
        ada.on("download", lambda d: downloads.append(d))
        await join(ada, "ada")
        await wait_connected(ada, "kernel")
        big = tmp_path / "stream.bin"
        big.write_bytes(os.urandom(40 * 10**6))
        share = await kernel.share_file(big)
        row = transfer_row(ada, "stream.bin")
        await row.get_by_role("button", name="Accept stream.bin").click()
        await expect(row.get_by_text("saved to disk")).to_be_visible(timeout=120_000)
        assert list((await share.wait(timeout=TIMEOUT)).values()) == ["done"]
        on_disk = await ada.evaluate(
            """async () => {
                const root = await navigator.storage.getDirectory();
                const file = await (await root.getFileHandle("stream.bin")).getFile();
                const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
                const hex = (b) => b.toString(16).padStart(2, "0");
                return [file.size, [...new Uint8Array(digest)].map(hex).join("")];
            }"""
        )
        assert on_disk == [big.stat().st_size, hashlib.sha256(big.read_bytes()).hexdigest()]
        assert downloads == []
    finally:
        await kernel.disconnect()


@pytest.mark.anyio
async def test_a_wrong_token_or_a_revoked_invite_is_explained(
    server: RunningServer, users: Users
) -> None:
    """Without a token in the address the page asks for it; a wrong one is
    refused with a reason and can be typed again. A revoked invite is
    checked when the page opens (GET p2p/invite) and says why."""
    kernel = await kernel_peer(server, "kernel", secret=SECRET)
    try:
        ada = await users.open(server.url)
        token = ada.get_by_label("Access token (if the server asks for one)")
        await token.fill("not-the-token")
        await join_fails(ada, "ada")
        await expect(ada.locator("#errors")).to_contain_text("refused the connection")
        await expect(ada.locator("#errors")).to_contain_text("unauthorized")
        await token.fill(server.token)
        await join(ada, "ada", room=None, secret=SECRET)
        await wait_connected(ada, "kernel")

        link = await kernel.create_invite(ttl=600)
        await kernel.revoke_invite(link)
        guest = await users.open(link)
        await expect(guest.locator("#errors")).to_contain_text(
            "This invite cannot be used: invite revoked"
        )
        await expect(guest.get_by_role("button", name="Join")).to_be_disabled()
    finally:
        await kernel.disconnect()


@pytest.mark.parametrize(
    "bad", ["https://x.example/; script-src *", "ftp://x.example/", "https://x y/", "https://x/?q"]
)
def test_a_remote_server_that_would_bend_the_csp_stops_the_server_at_start(bad: str) -> None:
    from p2p_nb.server.__main__ import main as signal_main
    from p2p_nb.server.standalone import create_app

    with pytest.raises(ValueError, match="remote signaling server"):
        create_app("tok", remote_servers=[bad])
    with pytest.raises(SystemExit):
        signal_main(["--port", "0", "--remote-server", bad])
    _, headers = render_page("/", "standalone", ["https://signal.example.org/base"])
    assert (
        "connect-src 'self' https://signal.example.org wss://signal.example.org;"
        in headers["Content-Security-Policy"]
    )


@pytest.mark.anyio
async def test_an_invite_opened_with_a_web_client_the_guest_trusts(
    server: RunningServer, users: Users
) -> None:
    """The page that reads the room secret is the one the guest's browser
    runs. With ``client_link`` the invite opens on a server the guest trusts
    (its own, started with ``--remote-server``), whose page connects to the
    link's signaling server (which lets that origin in, ``--cors-origin``):
    the signaling server serves nothing the guest runs. A server that does
    not allow that remote says so instead of connecting anywhere."""
    kernel = await kernel_peer(server, "host", secret=SECRET)
    own = await start_server(remote_servers=[server.url])
    try:
        server.service.sio.eio.cors_allowed_origins = [own.url.rstrip("/")]
        link = await kernel.create_invite(ttl=600)
        mine = client_link(link, own.url)
        context = await web_user(users.browser)
        users.contexts.append(context)
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        guest = await open_client(context, mine)
        await expect(guest).to_have_url(own.url + "p2p/join")
        sockets: list[str] = []
        guest.on("websocket", lambda ws: sockets.append(ws.url))
        await join(guest, "guest", room=None)
        await wait_connected(guest, "host")
        inbox = kernel.events("message")
        await send_chat(guest, "from a page I trust")
        got = (await inbox.get(timeout=TIMEOUT)).data
        assert (got.sender_name, got.text) == ("guest", "from a page I trust")
        # everything the page runs came from the guest's own server; the
        # signaling server only got the socket
        assert requests != []
        assert all(u.startswith(own.url) for u in requests), requests
        signal_socket = server.url.replace("http://", "ws://") + "p2p/socket.io/"
        assert [u for u in sockets if not u.startswith(signal_socket)] == []
        assert sockets != []
        assert not any(SECRET in urllib.parse.unquote(u) for u in requests + sockets)

        # a server without --remote-server for it refuses to connect there
        strict = await start_server()
        try:
            other = await users.open(client_link(link, strict.url))
            await other.get_by_label("Your name").fill("nobody")
            await other.get_by_role("button", name="Join").click()
            await expect(other.locator("#errors")).to_contain_text(
                "connects only to its own server"
            )
            await other.close()
        finally:
            await strict.stop()
    finally:
        await kernel.disconnect()
        await own.stop()


async def join_fails(page: Page, name: str, room: str = ROOM) -> None:
    """Fill the form and press Join, expecting a refusal (the form stays)."""
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Room", exact=True).fill(room)
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#errors li")).not_to_have_count(0)
    await expect(page.get_by_role("button", name="Join")).to_be_enabled()
    await expect(page.get_by_role("button", name="Leave")).to_be_hidden()


@pytest.mark.anyio
async def test_a_link_to_a_browser_moves_to_the_signaling_relay(
    server: RunningServer, users: Users, tmp_path: Path
) -> None:
    """No direct path any more (the link is cut and the offerer asks for the
    relay, as it does after failed attempts): the browser agrees on a sealed
    session through the signaling server; chat and a file still go both
    ways, and both ends show the link relayed."""
    slow = MeshSettings(reconnect=ReconnectPolicy(base_delay=3600.0, max_delay=3600.0))
    ada = await users.open(f"{server.url}?token={server.token}")
    kernel = None
    try:
        await join(ada, "ada", room="relayroom")
        ada_id = await ada.evaluate("window.p2pClient().peerId")
        # the kernel must be the offerer (the smaller id): join until it is
        for _ in range(50):
            kernel = await P2PApp.connect(
                server.url,
                server.token,
                thread=False,
                mesh_settings=slow,
                download_dir=tmp_path / "kernel-downloads",
            )
            await kernel.join_room("relayroom", name="kernel")
            if (kernel.peer_id or "") < ada_id:
                break
            await kernel.disconnect()
            kernel = None
        assert kernel is not None, "no smaller peer id in 50 joins"
        await wait_connected(ada, "kernel")
        await wait_mesh([kernel], 1)
        assert next(iter(kernel.peers)) == ada_id
        link = kernel._require_mesh().links[ada_id]
        states = kernel.events("peer_state")
        await link.cut()
        seen: list[str] = []
        while "reconnecting" not in seen:
            seen.append((await states.get(timeout=TIMEOUT)).data["new"])
        link.signals.put_nowait({"type": "_relay"})
        while "relayed" not in seen:
            seen.append((await states.get(timeout=TIMEOUT)).data["new"])
        await expect(peer_row(ada, "kernel").locator(".peer-state")).to_have_text("relayed")
        await expect(peer_row(ada, "kernel").locator(".peer-code")).to_have_text("")
        inbox = kernel.events("message")
        await send_chat(ada, "through the relay")
        assert (await inbox.get(timeout=TIMEOUT)).data.text == "through the relay"
        await kernel.send_message("relayed back")
        await expect(chat_line(ada, "kernel", "relayed back")).to_be_visible()
        offers = kernel.events("file_offer")
        received = kernel.events("file_received")
        src = tmp_path / "relayed.bin"
        src.write_bytes(os.urandom(500_000))
        await pick_files(ada, "Files to share", src)
        await (await offers.get(timeout=TIMEOUT)).data.accept()
        got = (await received.get(timeout=60)).data
        assert got.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    finally:
        if kernel is not None:
            await kernel.disconnect()
