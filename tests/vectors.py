"""``docs/vectors.json``, the protocol's wire truth, for the Python tests.

The web client's unit tests (``tests/web/unit.js``) read the same file, so a
value changed there alone fails both suites: neither implementation can drift
from the other, nor from docs/protocol.md, which points at it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VECTORS_FILE = Path(__file__).resolve().parent.parent / "docs" / "vectors.json"


@cache
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return data


def vectors(section: str) -> Any:
    """One section of the file (``constants``, ``codec``, ``safety``, ...)."""
    return _load()[section]


def expand(wire: str | list[Any]) -> str:
    """A wire string as the file writes it: a string, or a list whose items are
    strings and ``[s, n]`` pairs (``s`` repeated ``n`` times), joined."""
    if isinstance(wire, str):
        return wire
    return "".join(item if isinstance(item, str) else item[0] * item[1] for item in wire)
