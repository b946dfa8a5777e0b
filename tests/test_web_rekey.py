"""The web client in a re-key (docs/protocol.md, section 6, "Re-keying";
section 8): a browser member adopts the room's new secret like a Python
member, so a revoked invite guest is out for it too.

Real things only, as in ``tests/test_web_client.py``: the standalone server,
Python peers (``P2PApp``), Debian Chromium driven by Playwright. Every wait
is on an event, a locator or a page condition, with a timeout. The rules of
``js/rekey.js`` (epochs, bans, the rate limit, the way back) are unit-tested
in ``tests/web/unit.js``.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from p2p_nb.app import P2PApp

from .browser import TIMEOUT
from .conftest import RunningServer
from .test_room_secret import rekeyed_to, wait_for_name
from .test_web_client import (
    SECRET,
    Users,
    chat_line,
    join,
    kernel_peer,
    peer_row,
    send_chat,
    server,  # noqa: F401  (the fixture)
    users,  # noqa: F401  (the fixture)
    wait_connected,
    wait_mesh,
)


async def page_true(page: Page, expression: str, arg: object = None) -> None:
    """Until ``expression`` (a function of ``arg`` and the page's live client) is true."""
    await page.wait_for_function(
        f"(arg) => {{ const c = window.p2pClient(); return !!c && ({expression}); }}",
        arg=arg,
        timeout=TIMEOUT * 1000,
    )


SEALED = "(pid) => window.p2pClient().links.get(pid).sealed.sealed"
"""The sealed profile the page holds for a peer (as the server last sent it)."""
OPEN_WITH_BOTH_KEYS = """async (pid) => {
  const c = window.p2pClient();
  const held = c.links.get(pid).sealed;
  const open = (key) => key.openProfile(pid, held).then(([n]) => n, () => "does not open");
  return { now: await open(c.roomKey), before: await open(c.rekeying.epochs.previous) };
}"""
"""What the held profile opens to with the page's current key and the one before it."""


@pytest.mark.anyio
async def test_a_browser_member_adopts_the_rekey_of_a_revoked_invite(
    server: RunningServer,  # noqa: F811
    users: Users,  # noqa: F811
) -> None:
    """A Python host revokes an invite in a room with a browser member (ada)
    and a Python member (ben): ada adopts the new secret and hands it back,
    opens the profiles sealed with it (ben's new capabilities, a newcomer's
    name), chats with both, and refuses descriptions made with the old
    secret (the revoked guest's) as the Python members do."""
    host = await kernel_peer(server, "host", secret=SECRET)
    ben = await kernel_peer(server, "ben", secret=SECRET)
    guest: P2PApp | None = None
    others: list[P2PApp] = []
    try:
        ada = await users.open(f"{server.url}?token={server.token}")
        await join(ada, "ada", secret=SECRET)
        link = await host.create_invite(ttl=600)
        guest = await P2PApp.connect(invite=link, thread=False)
        await guest.join_room(name="gus")
        await wait_connected(ada, "host", "ben", "gus")
        await wait_mesh([host, ben, guest], 3)
        gid, bid, hid = guest.peer_id, ben.peer_id, host.peer_id
        aid = await ada.evaluate("window.p2pClient().peerId")
        before = {pid: await ada.evaluate(SEALED, pid) for pid in (hid, bid)}

        await host.revoke_invite(link)
        await rekeyed_to(ben, 1)
        # ada adopted epoch 1, the host's, and sent it back: the host knows she has it
        await page_true(ada, "c.rekeying.epochs.epoch === 1 && c.rekeying.epochs.by === arg", hid)
        assert host._epochs is not None
        secret = host._epochs.secret
        assert secret != SECRET
        await page_true(ada, "c.rekeying.epochs.secret === arg", secret)
        await expect(peer_row(ada, "gus")).to_have_count(0)
        assert await ada.evaluate("(g) => window.p2pClient().rekeying.epochs.banned.has(g)", gid)

        # the profiles host and ben sealed with the new key (on adopting) open
        # in the browser, and it shows their real names from them
        for pid, name in ((hid, "host"), (bid, "ben")):
            changed = "c.links.get(arg[0])?.sealed?.sealed !== arg[1]"
            await page_true(ada, changed, [pid, before[pid]])
            opened = await ada.evaluate(OPEN_WITH_BOTH_KEYS, pid)
            assert opened == {"now": name, "before": "does not open"}
            row = peer_row(ada, name)
            await expect(row.locator(".peer-state")).to_have_text("connected")
            await expect(row).not_to_have_class(re.compile("mismatch"))

        # chat both ways with both
        inboxes = [app.events("message") for app in (host, ben)]
        await send_chat(ada, "after the re-key")
        for inbox in inboxes:
            assert (await inbox.get(timeout=TIMEOUT)).data.text == "after the re-key"
        # her copy of the rekey went before that chat on the same channel: the
        # host knows she has the new epoch (no way back for her certificate)
        assert aid not in host._epochs.entitled
        await host.send_message("host, new key")
        await ben.send_message("ben, new key")
        await expect(chat_line(ada, "host", "host, new key")).to_be_visible()
        await expect(chat_line(ada, "ben", "ben, new key")).to_be_visible()

        # a newcomer with the new secret: authenticated and named with the new key
        cy = await kernel_peer(server, "cy", secret=secret)
        others.append(cy)
        await wait_connected(ada, "cy")
        assert (await wait_for_name(cy, aid, "ada")).name == "ada"

        # the old secret, as the revoked guest has it: refused by the browser too
        mallory = await kernel_peer(server, "mallory", secret=SECRET)
        others.append(mallory)
        mid = mallory.peer_id
        row = ada.locator(f'#peers li.peer[data-peer="{mid}"]')
        await expect(row.locator(".peer-state")).to_have_text(
            "another room secret", timeout=TIMEOUT * 1000
        )
        await expect(row.locator(".peer-name")).not_to_have_text("mallory")
        assert mallory.connected_peers() == []
        await expect(ada.locator("#errors li")).to_have_count(0)
    finally:
        for app in [*others, *([guest] if guest else []), ben, host]:
            await app.disconnect()


@pytest.mark.anyio
async def test_an_invite_guest_reloads_after_a_rekey_and_is_back(
    server: RunningServer,  # noqa: F811
    users: Users,  # noqa: F811
) -> None:
    """A browser guest came with an invite link (its secret kept for the tab);
    another invite is revoked and the room re-keyed: the tab now keeps the new
    secret, so a reload (a new certificate, which the way back for members
    that missed a re-key does not cover) gets back in and opens the host's
    profile with the new key."""
    host = await kernel_peer(server, "host", secret=SECRET)
    gus: P2PApp | None = None
    try:
        ada = await users.open(await host.create_invite(ttl=600))
        await join(ada, "ada", room=None)
        await wait_connected(ada, "host")
        other = await host.create_invite(ttl=600)
        gus = await P2PApp.connect(invite=other, thread=False)
        await gus.join_room(name="gus")
        await wait_connected(ada, "gus")
        await host.revoke_invite(other)
        assert host._epochs is not None
        await page_true(ada, "c.rekeying.epochs.epoch === 1")
        secret = host._epochs.secret
        stored = "() => JSON.parse(sessionStorage.getItem('p2p-nb-address')).secret"
        await ada.wait_for_function(
            f"(s) => ({stored})() === s", arg=secret, timeout=TIMEOUT * 1000
        )
        await ada.reload()
        await join(ada, "ada", room=None)
        await wait_connected(ada, "host")  # its row named from the profile sealed with the new key
        await expect(ada.locator("#errors li")).to_have_count(0)
    finally:
        for app in [*([gus] if gus else []), host]:
            await app.disconnect()
