"""Revoked means out across a restart, and invites outlive one (issue 17).

The real ``p2p-nb-signal`` process keeps its revoked invites in an owner-only
file beside its resume key file (``revoked-PORT.json`` in the state folder by
default); it is SIGKILLed and started again with the same options. The file's
own rules (modes, garbled or oversized files, expired entries, torn appends,
compaction) are checked on :class:`RevocationLog` and :class:`InviteBook`
directly, with a clock of the test's own where time must pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from p2p_nb.app import P2PApp
from p2p_nb.errors import AuthError
from p2p_nb.server.auth import AuthRefused, Identity
from p2p_nb.server.invites import InviteBook, persistent_invites
from p2p_nb.server.statefile import (
    COMPACT_SLACK,
    HEADER,
    RevocationLog,
    StateFileError,
    revocations_path,
)

from .conftest import TOKEN, spawn_signal_server
from .test_restart import free_port, servers

pytestmark = pytest.mark.anyio

ISSUER = Identity("token", "host-key")


def header() -> str:
    return json.dumps(HEADER) + "\n"


def entry(invite_id: str, expiry: float, issuer: str = "b" * 16) -> str:
    return json.dumps({"i": invite_id, "e": expiry, "b": issuer}) + "\n"


@pytest.mark.parametrize("explicit", [False, True], ids=["default-key-file", "explicit-key-file"])
async def test_a_revoked_invite_stays_out_and_the_other_works_after_a_restart(
    explicit: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invites, one revoked, the server SIGKILLed and started again with
    the same options: the unrevoked invite still joins, the revoked one is
    refused. (Before: with the default key file neither worked after the
    restart; with ``--resume-key-file`` both did, the revoked one included.)"""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    port = str(free_port())
    key = tmp_path / "keys" / "signal.key"
    options = ("--port", port, *(("--resume-key-file", str(key)) if explicit else ()))
    folder = key.parent if explicit else tmp_path / "state" / "p2p-nb"
    kept = folder / ("signal.key.revoked.json" if explicit else f"revoked-{port}.json")
    async with servers() as started:
        started.append(await spawn_signal_server(*options))
        host = await P2PApp.connect(started[0].url, TOKEN, thread=False)
        try:
            await host.join_room("room1", name="host")
            kept_link = await host.create_invite(ttl=600)
            revoked_link = await host.create_invite(ttl=600)
            await host.revoke_invite(revoked_link)
            assert stat.S_IMODE(kept.stat().st_mode) == 0o600
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            restored = host.events("signaling_restored")
            started[0].process.kill()
            await started[0].process.wait()
            started.append(await spawn_signal_server(*options))
            assert (await restored.get(timeout=30)).data["resumed"] is True
            with pytest.raises(AuthError, match="revoked"):
                await P2PApp.connect(invite=revoked_link, thread=False)
            guest = await P2PApp.connect(invite=kept_link, thread=False)
            try:
                joined = host.events("peer_joined")
                assert await guest.join_room(name="guest")
                assert (await joined.get(timeout=30)).peer_id == guest.peer_id
            finally:
                await guest.disconnect()
            assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # compacted at start: still 0600
        finally:
            await host.disconnect()


async def test_no_resume_key_file_keeps_nothing_and_invites_end_at_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--no-resume-key-file``: nothing is written, and an invite made before
    a restart is refused after it (another key: "made by another server")."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    options = ("--port", str(free_port()), "--no-resume-key-file")
    async with servers() as started:
        started.append(await spawn_signal_server(*options))
        host = await P2PApp.connect(started[0].url, TOKEN, thread=False)
        try:
            await host.join_room("room1", name="host")
            link = await host.create_invite(ttl=600)
            await host.revoke_invite(await host.create_invite(ttl=600))
            started[0].process.kill()
            await started[0].process.wait()
            started.append(await spawn_signal_server(*options))
            with pytest.raises(AuthError, match="another server"):
                await P2PApp.connect(invite=link, thread=False)
        finally:
            await host.disconnect()
    assert not (tmp_path / "state").exists()


async def start_failure(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``p2p-nb-signal`` expecting it to stop at start: its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2p_nb.server",
        "--host",
        "127.0.0.1",
        "--token",
        TOKEN,
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("{not json\n", 0o600, "not a p2p-nb revoked-invite file"),
        (header() + '{"i": "x"}\n', 0o600, "garbled at line 2"),
        (header(), 0o644, "accessible to other users"),
        ("", 0o600, "is empty"),
    ],
    ids=["not-a-revocations-file", "garbled-entry", "readable-by-others", "empty"],
)
async def test_an_untrustworthy_file_stops_the_server_at_start(
    content: str, mode: int, reason: str, tmp_path: Path
) -> None:
    """A garbled revoked-invite file, or one others can read, stops the server
    at start with a message naming the file, never an empty list (which would
    readmit every revoked guest)."""
    state = tmp_path / "state"
    port = str(free_port())
    path = state / "p2p-nb" / f"revoked-{port}.json"
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(content)
    path.chmod(mode)
    code, err = await start_failure(
        "--port", port, env={"XDG_STATE_HOME": str(state), "HOME": str(tmp_path)}
    )
    assert code != 0
    assert err.startswith("p2p-nb-signal: "), err
    assert str(path) in err
    assert reason in err
    assert path.read_text() == content  # left as it was, for the operator


async def test_expired_entries_are_dropped_when_the_server_starts(tmp_path: Path) -> None:
    """The server loads its file at start, keeps the unexpired entries and
    rewrites it without the expired ones (same mode)."""
    port = free_port()
    key = tmp_path / "state" / "p2p-nb" / f"resume-{port}.key"
    path = revocations_path(key)
    path.parent.mkdir(parents=True, mode=0o700)
    live = entry("1" * 16, time.time() + 3600)
    path.write_text(header() + entry("0" * 16, time.time() - 10) + live)
    path.chmod(0o600)
    async with servers() as started:
        started.append(
            await spawn_signal_server("--port", str(port), "--resume-key-file", str(key))
        )
    assert path.read_text() == header() + live.replace(" ", "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_revoked_list_is_reloaded_without_what_expired(tmp_path: Path) -> None:
    """A book reopened on the same file refuses what was revoked, accepts the
    rest, and forgets entries whose invite expired meanwhile (the file shrinks)."""
    now = [1_000_000.0]
    key = tmp_path / "resume-1.key"

    def book() -> InviteBook:
        return InviteBook(
            b"k" * 32,
            clock=lambda: now[0],
            revocations=RevocationLog(revocations_path(key), 100),
        )

    first = book()
    short, _ = first.mint("r", ISSUER, 60)
    long, _ = first.mint("r", ISSUER, 3600)
    kept, _ = first.mint("r", ISSUER, 3600)
    first.revoke(short, ISSUER)
    first.revoke(long, ISSUER)
    first.close()
    second = book()
    with pytest.raises(AuthRefused, match="revoked"):
        second.check(long)
    second.check(kept)
    assert second.revoked_by(ISSUER) == 2
    second.close()
    now[0] += 120  # the short invite has expired
    third = book()
    assert third.revoked_by(ISSUER) == 1
    third.close()
    assert len(revocations_path(key).read_text().splitlines()) == 2  # header + the long one


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "revoked-1.json"
    future = time.time() + 3600
    path.write_text(header() + "".join(entry(f"{n:016x}", future) for n in range(3)))
    path.chmod(0o600)
    with pytest.raises(StateFileError, match="more than a server keeps"):
        RevocationLog(path, 2).load(time.time())
    path.write_text(header() + entry("0" * 16, future) * (2 * 2 + COMPACT_SLACK + 1))
    with pytest.raises(StateFileError, match="more lines"):
        RevocationLog(path, 2).load(time.time())


def test_a_torn_last_append_is_dropped(tmp_path: Path) -> None:
    """An unterminated last line is an append a crash cut short (its revoke was
    never acknowledged): dropped, the rest kept."""
    path = tmp_path / "revoked-1.json"
    live = entry("1" * 16, time.time() + 3600)
    path.write_text(header() + live + live[:20])
    path.chmod(0o600)
    entries = RevocationLog(path, 10).load(time.time())
    assert [e[1] for e in entries] == ["1" * 16]
    assert path.read_text().endswith("\n")


def test_the_log_is_compacted_as_entries_expire(tmp_path: Path) -> None:
    """Each revoke appends a line; once the file holds more than twice the live
    entries plus the slack, it is rewritten with the live ones only, so a
    long-running server's file stays bounded (and loadable at its next start)."""
    now = [1_000_000.0]
    key = tmp_path / "resume-1.key"
    books = InviteBook(
        b"k" * 32, clock=lambda: now[0], revocations=RevocationLog(revocations_path(key), 10)
    )
    for _ in range(COMPACT_SLACK + 10):
        token, _ = books.mint("r", ISSUER, 60)
        books.revoke(token, ISSUER)
        now[0] += 61  # it expires before the next one
    books.close()
    lines = revocations_path(key).read_text().splitlines()
    assert len(lines) < COMPACT_SLACK
    reopened = persistent_invites(b"k" * 32, key)  # the real clock: all expired long ago
    assert reopened.revoked_by(ISSUER) == 0
    reopened.close()


def test_a_jupyter_server_with_a_key_file_keeps_revocations_beside_it(tmp_path: Path) -> None:
    """The extension with ``resume_key_file``: invites outlive a restart (a new
    extension on the same file) and revoked ones stay out, kept in
    ``<key file>.revoked.json`` (0600); without it nothing is written."""
    from traitlets.config import Config

    from p2p_nb.jupyter_ext.app import P2PExtensionApp

    path = tmp_path / "p2p-resume.key"
    config = Config({"P2PExtensionApp": {"resume_key_file": str(path)}})
    before = P2PExtensionApp(config=config)
    before.initialize_settings()
    assert before.service is not None
    kept, _ = before.service.invites.mint("r", ISSUER, 600)
    revoked, _ = before.service.invites.mint("r", ISSUER, 600)
    before.service.invites.revoke(revoked, ISSUER)
    before.service.close()
    after = P2PExtensionApp(config=config)
    after.initialize_settings()
    assert after.service is not None
    after.service.invites.check(kept)
    with pytest.raises(AuthRefused, match="revoked"):
        after.service.invites.check(revoked)
    after.service.close()
    assert stat.S_IMODE((tmp_path / "p2p-resume.key.revoked.json").stat().st_mode) == 0o600
    plain = P2PExtensionApp()
    plain.initialize_settings()
    assert plain.service is not None
    assert not plain.service.invites.persistent
    plain.service.close()


def test_a_revoke_that_cannot_be_recorded_is_refused(tmp_path: Path) -> None:
    """When the file cannot take the entry the revoke fails, saying so, and the
    invite is not revoked (nobody is told it is when the disk does not say so)."""
    books = persistent_invites(b"k" * 32, tmp_path / "resume-1.key")
    token, _ = books.mint("r", ISSUER, 600)
    books.close()  # stands for a disk that refuses the write
    with pytest.raises(AuthRefused, match="could not record"):
        books.revoke(token, ISSUER)
    books.check(token)
