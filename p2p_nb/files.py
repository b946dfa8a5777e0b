"""Where received bytes land on disk, and how they can never land elsewhere.

A file name comes from another user's kernel: it is reduced to a plain base
name inside the downloads folder, written under a temporary name, verified,
and only then published under a name that no existing file has.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

MAX_NAME_CHARS = 120
"""Longest saved file name; the extension is kept when a name is shortened."""
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


def safe_file_name(name: str) -> str:
    """A base name that is safe to create in the downloads folder on any OS.

    Path separators of both kinds cut the name to its last component; ``.``
    and ``..`` and names made only of dots become ``file``; control and
    shell-hostile characters are dropped; reserved device names get a ``_``
    prefix; the result is at most :data:`MAX_NAME_CHARS` characters.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().strip(".")
    if not name:
        name = "file"
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.split(".")[0].lower() in WINDOWS_RESERVED or name.lower() in WINDOWS_RESERVED:
        name = "_" + name
        stem = "_" + stem
    if len(name) > MAX_NAME_CHARS:
        ext = ext[:16]
        keep = MAX_NAME_CHARS - len(ext) - (1 if ext else 0)
        name = stem[:keep] + ("." + ext if ext else "")
    return name


def part_path(folder: Path, transfer_id: str) -> Path:
    """The temporary file of one transfer: hidden, and never a final name."""
    return folder / f".p2p-{transfer_id}.part"


def publish(part: Path, folder: Path, name: str) -> Path:
    """Give a verified part file its final name without replacing any file.

    ``os.link`` fails if the target exists, so two transfers of ``data.csv``
    become ``data.csv`` and ``data (1).csv``, even if they finish together.
    """
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    for n in range(10_000):
        candidate = folder / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
        try:
            os.link(part, candidate)
        except FileExistsError:
            continue
        except OSError:
            # Filesystems without hard links: check-then-rename is the best we have.
            if candidate.exists():
                continue
            os.replace(part, candidate)
            return candidate
        part.unlink()
        return candidate
    raise FileExistsError(f"no free name for {name!r} in {folder}")
