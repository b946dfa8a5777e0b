"""The revoked-invite list kept in a file, so a revoked invite stays out after a restart.

Invites are signed with a key derived from the resume key; where that key
outlives a restart (a key file) so do invites, and then so must their
revocations, or a restart would let revoked guests back in. This file keeps
them beside the key file (:func:`revocations_path`: ``revoked-PORT.json`` for
the state folder's ``resume-PORT.key``), owner-only, in a folder only its
owner can enter, and is refused when others can read or write it (they could
learn or erase who was revoked).

Format: an append-only log of JSON lines. The first is the header
``{"p2p-nb revoked": 1}``; each other is one revocation ``{"i": id, "e":
expiry, "b": issuer}`` (16 hex, UNIX seconds, 16 hex). Why a log and not one
JSON document rewritten per revoke: the list may hold 100 000 entries (several
MB), and rewriting that on every revoke would make each one O(n) on the
server's only event loop again (the cost issue 17 item 5 removed from memory).
A revoke appends one line and ``fsync``\\ s it before the revoker is answered,
so an acknowledged revoke survives a crash or SIGKILL; the log is compacted
(rewritten with only unexpired entries: temp file, ``fsync``, ``os.replace``,
mode 0600) at start, and again whenever it holds more than twice as many lines
as live entries plus :data:`COMPACT_SLACK`, so it stays bounded and the
rewrites cost O(1) per revoke, amortised.

At start a file that cannot be trusted is an error, never an empty list
(which would readmit every revoked guest): unsafe permissions, a wrong
header, a malformed line, more lines than the log can hold. One exception: an
unterminated last line is a torn append from a crash; that revoke's ``fsync``
never returned, so nobody was told it happened, and it is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .keyfile import KeyFileError, make_private_dir

log = logging.getLogger(__name__)

HEADER = {"p2p-nb revoked": 1}
COMPACT_SLACK = 1024
"""Dead lines the log may hold beyond its live ones before it is compacted."""
MAX_LINE_CHARS = 128
"""Longest line of a valid log (an entry is ~60 characters)."""
_HEX16 = re.compile(r"[0-9a-f]{16}")

Entry = tuple[float, str, str]
"""(expiry, invite id, issuer): what the log keeps of one revocation."""


class StateFileError(KeyFileError):
    """The revoked-invite file cannot be used (unsafe permissions, garbled, oversized)."""


def revocations_path(key_file: str | os.PathLike[str]) -> Path:
    """Where the revocations of the server whose resume key is in ``key_file``
    are kept: ``revoked-PORT.json`` beside ``resume-PORT.key``, else
    ``<key file name>.revoked.json`` beside it."""
    key = Path(key_file)
    match = re.fullmatch(r"resume-(\d+)\.key", key.name)
    name = f"revoked-{match.group(1)}.json" if match else key.name + ".revoked.json"
    return key.with_name(name)


def _parse(line: str, path: Path, number: int) -> Entry:
    try:
        body = json.loads(line)
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or set(body) != {"i", "e", "b"}
        or not isinstance(body["i"], str)
        or not _HEX16.fullmatch(body["i"])
        or not isinstance(body["b"], str)
        or not _HEX16.fullmatch(body["b"])
        or isinstance(body["e"], bool)
        or not isinstance(body["e"], int | float)
        or not math.isfinite(body["e"])
    ):
        raise StateFileError(
            f"the revoked-invite file {path} is garbled at line {number}; "
            "fix or remove it (removing it readmits every revoked invite that has not expired)"
        )
    return float(body["e"]), body["i"], body["b"]


class RevocationLog:
    """The owner-only, append-only file of one server's revoked invites."""

    def __init__(self, path: str | os.PathLike[str], max_entries: int) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        """Live entries the book holds at most: bounds the file a start accepts."""
        self._fd: int | None = None
        self._lines = 0
        """Entry lines in the file now (live or expired)."""

    @property
    def max_lines(self) -> int:
        """Entry lines the log may hold before it must be compacted."""
        return 2 * self.max_entries + COMPACT_SLACK

    def load(self, now: float) -> list[Entry]:
        """The unexpired entries of the file (none if it does not exist), then
        compact it and keep it open for :meth:`append`. :class:`StateFileError`
        when it cannot be trusted."""
        make_private_dir(self.path.parent)
        entries: dict[str, Entry] = {}
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateFileError(
                f"cannot open the revoked-invite file {self.path}: {exc.strerror}"
            ) from None
        else:
            with os.fdopen(fd, encoding="utf-8", errors="strict") as source:
                mode = os.fstat(source.fileno()).st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise StateFileError(
                        f"the revoked-invite file {self.path} is accessible to other users "
                        f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
                    )
                limit = (self.max_lines + 1) * MAX_LINE_CHARS
                if os.fstat(source.fileno()).st_size > limit:
                    raise StateFileError(
                        f"the revoked-invite file {self.path} is larger than a valid one "
                        f"can be ({limit} bytes)"
                    )
                try:
                    text = source.read()
                except UnicodeError:
                    raise StateFileError(
                        f"the revoked-invite file {self.path} is not UTF-8 text"
                    ) from None
            for entry in self._entries(text):
                if entry[0] > now:
                    entries[entry[1]] = entry
            if len(entries) > self.max_entries:
                raise StateFileError(
                    f"the revoked-invite file {self.path} holds {len(entries)} unexpired "
                    f"entries, more than a server keeps ({self.max_entries})"
                )
        live = sorted(entries.values())
        self.compact(live)
        return live

    def _entries(self, text: str) -> Iterable[Entry]:
        lines = text.split("\n")
        if lines[-1]:
            log.warning(
                "%s: dropping an unterminated last line (a revoke torn by a crash, "
                "never acknowledged)",
                self.path,
            )
        lines.pop()  # "" after the last newline, or the torn line
        if not lines:  # the header is written atomically with the file: never torn
            raise StateFileError(
                f"the revoked-invite file {self.path} is empty (truncated?); "
                "fix or remove it (removing it readmits every revoked invite that has not expired)"
            )
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if header != HEADER:
            raise StateFileError(
                f"{self.path} is not a p2p-nb revoked-invite file (its first line is not "
                f"{json.dumps(HEADER)})"
            )
        if len(lines) - 1 > self.max_lines:
            raise StateFileError(
                f"the revoked-invite file {self.path} has more lines than a valid one "
                f"can have ({self.max_lines})"
            )
        for number, line in enumerate(lines[1:], start=2):
            if len(line) > MAX_LINE_CHARS:
                raise StateFileError(
                    f"the revoked-invite file {self.path} is garbled at line {number} (too long)"
                )
            yield _parse(line, self.path, number)

    @staticmethod
    def _line(entry: Entry) -> str:
        expiry, invite_id, issuer = entry
        return json.dumps({"i": invite_id, "e": expiry, "b": issuer}, separators=(",", ":"))

    def compact(self, live: Iterable[Entry]) -> None:
        """Replace the file, atomically, by one holding only ``live``; appends go
        on to the new file (the old one stays in use if this fails)."""
        rows = [json.dumps(HEADER)] + [self._line(entry) for entry in live]
        temp = self.path.with_name(self.path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # a leftover of a crash
            fd = os.open(temp, flags, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("\n".join(rows) + "\n")
                out.flush()
                os.fsync(out.fileno())
                new_fd = os.open(temp, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.replace(temp, self.path)
            except OSError:
                os.close(new_fd)
                raise
        except OSError as exc:
            raise StateFileError(
                f"cannot write the revoked-invite file {self.path}: {exc.strerror}"
            ) from None
        self._fsync_dir()
        self.close()
        self._fd = new_fd
        self._lines = len(rows) - 1

    def _fsync_dir(self) -> None:
        """Make the rename itself durable (best effort where folders cannot be opened)."""
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def append(self, entry: Entry) -> None:
        """Add one revocation, on disk before this returns (OSError if it cannot)."""
        if self._fd is None:
            raise OSError(f"the revoked-invite file {self.path} is not open")
        data = (self._line(entry) + "\n").encode()
        written = os.write(self._fd, data)  # O_APPEND: one write, never interleaved
        if written != len(data):
            raise OSError(f"short write to {self.path}")
        os.fsync(self._fd)
        self._lines += 1

    def needs_compaction(self, live: int) -> bool:
        """Whether the file holds so many expired lines it should be rewritten."""
        return self._lines > 2 * live + COMPACT_SLACK

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
