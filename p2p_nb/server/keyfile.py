"""The resume key kept in a file, so peers keep their ids across a restart.

``p2p-nb-signal`` keeps its key by default in an owner-only file of the
user's state folder (:func:`default_key_path`: one per port, so two servers on
one machine never accept each other's resume secrets or invites); a restart on
the same port and token then resumes every peer under its old id and no link
is rebuilt. ``--no-resume-key-file`` opts out (a fresh random key per process:
a restart gives everyone new ids). The file holds the only secret that can mint
resume secrets and invites, so it is created owner-only (in a folder only its
owner can enter) and refused when others can read it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

STATE_DIR_NAME = "p2p-nb"


class KeyFileError(Exception):
    """The resume key file cannot be used (unsafe permissions, unreadable, garbled)."""


def state_dir() -> Path:
    """Where p2p-nb keeps state that outlives a process: ``$XDG_STATE_HOME/p2p-nb``
    (default ``~/.local/state/p2p-nb``), as the XDG base directory spec says."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / STATE_DIR_NAME


def default_key_path(port: int, folder: str | os.PathLike[str] | None = None) -> Path:
    """The resume key file of the server on ``port`` (in ``folder``, default :func:`state_dir`)."""
    return Path(folder if folder is not None else state_dir()) / f"resume-{port}.key"


def make_private_dir(folder: Path) -> None:
    """Create ``folder`` (mode 0700) and its parents, if missing."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create the folder {folder}: {exc.strerror}") from None


def load_or_create_resume_key(path: str | os.PathLike[str]) -> bytes:
    """Read the key at ``path``, or create it (mode 0600, never following a link)."""
    path = Path(path)
    make_private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise KeyFileError(f"cannot create the resume key file {path}: {exc.strerror}") from None
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
