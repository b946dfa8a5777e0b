"""Where received bytes land on disk, and how they can never land elsewhere.

A file name comes from another user's kernel: it is reduced to a plain base
name inside the downloads folder, written under a temporary name that *we*
choose (never one derived from the sender's transfer id), verified, and only
then published under a name that no existing file or link has. Every step that
creates a directory entry does so atomically (``O_CREAT | O_EXCL`` or
``link()``), so nothing already in the folder is followed, replaced or raced.
"""

from __future__ import annotations

import errno
import os
import secrets
import unicodedata
from pathlib import Path

MAX_NAME_BYTES = 200
"""Longest saved file name in UTF-8 bytes, extension included (file systems
limit names to 255 *bytes*; the margin leaves room for ``" (9999)"``). A longer
name is cut on a character boundary and keeps its extension."""
MAX_EXTENSION_BYTES = 32
"""A suffix longer than this (UTF-8 bytes) is not treated as an extension."""
_DEVICE_DIGITS = "0123456789\u00b9\u00b2\u00b3"
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$", "clock$"]
    + [f"com{d}" for d in _DEVICE_DIGITS]
    + [f"lpt{d}" for d in _DEVICE_DIGITS]
)
"""Windows device names, reserved with any extension and in any case; Windows
counts the superscript digits ¹²³ as digits, so ``COM¹`` is a device too."""
_SHELL_HOSTILE = frozenset('<>:"|?*/\\')
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories never kept in a name: controls (C0, DEL, C1), format
characters (bidi overrides such as U+202E, zero-width characters, BOM),
surrogates (a JSON string may hold a lone one; it cannot be encoded) and
line/paragraph separators (they break a name across lines in a listing)."""
PART_PREFIX = ".p2p-"
PART_SUFFIX = ".part"
_OPEN_NEW = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
"""Create a new file or fail: never opens an existing file, never follows a
link (``O_EXCL`` with ``O_CREAT`` fails on any existing entry, a dangling
symlink included; ``O_NOFOLLOW`` says the same where it exists)."""


def _is_reserved(name: str) -> bool:
    """Whether Windows would open a device for this name.

    Windows ignores what follows the first dot and trailing spaces before it:
    ``con``, ``CON.txt``, ``con .txt`` and ``Con.tar.gz`` are all the console.
    """
    base = name.split(".", 1)[0].rstrip(" ").lower()
    return base in WINDOWS_RESERVED


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        c
        for c in name
        if c not in _SHELL_HOSTILE and unicodedata.category(c) not in _DROPPED_CATEGORIES
    )
    # dropping a character can bring two others together that compose
    name = unicodedata.normalize("NFC", name)
    # Windows drops trailing dots and spaces; leading dots would hide the file
    # (and could imitate our part files)
    return name.strip(" .\t")


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` of at most ``max_bytes`` UTF-8 bytes."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def safe_file_name(name: str) -> str:
    """A base name that is safe to create in the downloads folder on any OS.

    Path separators of both kinds cut the name to its last component; the
    name is NFC-normalised; control, format (bidi, zero-width), surrogate,
    line-separator and shell-hostile characters are dropped; leading and
    trailing dots and spaces go; ``.``, ``..`` and names left empty become
    ``file``; reserved device names get a ``_`` prefix; the result is at most
    :data:`MAX_NAME_BYTES` bytes of UTF-8, cut on a character boundary, with
    its extension kept.
    """
    name = _clean(name) or "file"
    prefix = "_" if _is_reserved(name) else ""
    budget = MAX_NAME_BYTES - len(prefix)
    if len(name.encode("utf-8")) > budget:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode("utf-8")) > MAX_EXTENSION_BYTES or " " in ext:
            stem, dot, ext = name, "", ""
        stem = _cut(stem, budget - len((dot + ext).encode("utf-8"))).rstrip(" .")
        name = (stem or "file") + dot + ext
    return prefix + name


def create_part(folder: Path) -> tuple[Path, int]:
    """A new, empty part file in ``folder`` under a name chosen here; (path, fd).

    The name is random (the sender's transfer id never reaches the file
    system), and the file is created exclusively without following links, so
    an entry planted at that name — a symlink to a file of the user's, say —
    is never opened: another random name is tried instead.
    """
    for _ in range(100):
        path = folder / f"{PART_PREFIX}{secrets.token_hex(12)}{PART_SUFFIX}"
        try:
            fd = os.open(path, _OPEN_NEW, 0o600)
        except FileExistsError:
            continue
        return path, fd
    raise FileExistsError(errno.EEXIST, "no free part-file name", str(folder))


def _candidates(name: str) -> list[str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    return [name] + [f"{stem} ({n}){dot}{ext}" for n in range(1, 10_000)]


_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}
)
"""``link()`` errors that mean "this file system has no hard links" (FAT,
some network and FUSE file systems): publishing then reserves names with
``O_EXCL`` instead."""


def publish(part: Path, folder: Path, name: str, *, hard_links: bool = True) -> Path:
    """Give a verified part file its final name without replacing any entry.

    ``os.link`` creates the new name only if no entry of that name exists (a
    dangling symlink counts), so two transfers of ``data.csv`` become
    ``data.csv`` and ``data (1).csv``, even if they finish together. Where hard
    links are not available (or ``hard_links`` is false), each name is
    claimed by creating it exclusively (``O_EXCL``) and the part file is then
    renamed over that empty file of ours: atomic as well, never a
    check-then-replace.
    """
    for candidate_name in _candidates(name):
        candidate = folder / candidate_name
        if hard_links:
            try:
                os.link(part, candidate)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                hard_links = False
            else:
                part.unlink()
                return candidate
        try:
            fd = os.open(candidate, _OPEN_NEW, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        try:
            os.replace(part, candidate)
        except OSError:
            candidate.unlink(missing_ok=True)
            raise
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free name for {name!r}", str(folder))
