"""Display names in a room: what the server accepts, what peers accept from a sealed
profile (in a room with a secret the server never sees them), and when two are "the same".

A name is what other members see in their peer list, so it must not be able to
pose as someone else's: no invisible or direction-changing characters (bidi
overrides, zero-width joiners, controls), and no second member whose name only
differs by case, width or compatibility form (``Ana``, ``ana`` and the fullwidth ``ana``).
Confusables across scripts (Latin ``a`` vs Cyrillic ``U+0430``) are not caught: the
peer id and the safety code stay the real identifiers.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 64
"""The longest display name (the server's ``ServerLimits.max_name_length`` default)."""
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Controls, format characters (bidi overrides and isolates, zero-width
space/joiners, BOM), lone surrogates, private use, line/paragraph separators."""


class NameProblem(ValueError):
    """A name the server refuses; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def clean_name(name: str, max_length: int) -> str:
    """The name as the room will show it (NFC, outer whitespace stripped), or raise.

    The error text names the offending code point, never repeats the name: it
    would carry the very characters that make it dangerous to display.
    """
    for char in name:
        category = unicodedata.category(char)
        if category in FORBIDDEN_CATEGORIES:
            raise NameProblem(
                "invalid_name",
                f"'name' must not contain U+{ord(char):04X} (category {category}): "
                "control, format, bidi and zero-width characters are refused",
            )
    cleaned = unicodedata.normalize("NFC", name).strip()
    if len(cleaned) > max_length:
        raise NameProblem("invalid_name", f"'name' is longer than {max_length} characters")
    return cleaned


def name_key(name: str) -> str:
    """What two names must differ in to be told apart: case, width and spacing do not count."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())
