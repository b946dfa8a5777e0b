"""The resume key kept in a file, for operators who want ids to survive a restart.

Off by default: a fresh random key per process is the safe choice (a restart
then gives everyone new ids). The file holds the only secret that can mint
resume secrets, so it is created owner-only and refused when others can read it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class KeyFileError(Exception):
    """The resume key file cannot be used (unsafe permissions, unreadable, garbled)."""


def load_or_create_resume_key(path: str | os.PathLike[str]) -> bytes:
    """Read the key at ``path``, or create it (mode 0600, never following a link)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        pass
    else:
        key = secrets.token_hex(32)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return key.encode()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeyFileError(f"cannot open the resume key file {path}: {exc.strerror}") from None
    with os.fdopen(fd) as source:
        mode = os.fstat(source.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"the resume key file {path} is accessible to other users "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
        key = source.read().strip()
    if len(key) < 32:
        raise KeyFileError(f"the resume key file {path} holds no key (at least 32 characters)")
    return key.encode()
