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


REFUSED_MARK = "(name taken) "
"""How a member whose name is already shown for another is shown instead:
this mark and its peer id (unique: the server makes it)."""


class RoomNames:
    """The names one member shows for the others in a room with a secret.

    There the server sees only pseudonyms, so its uniqueness rule never fires,
    and a peer's real name comes from its sealed profile, which anyone with the
    secret (an invite guest) can fill with any name: ``ana``, the host's. So
    each member applies the rule itself: a name whose :func:`name_key` is
    already shown (for another peer, or our own name) is refused for the later
    claimant, which is shown as :data:`REFUSED_MARK` + its peer id. First come,
    first shown, in the order this member learns of the claims (the server
    introduces members in join order); when the holder leaves, the oldest
    refused claim to that name is shown after all.
    """

    def __init__(self, own_id: str, own_name: str) -> None:
        self._own_id = own_id
        self._own_key = name_key(own_name)
        self._claimed: dict[str, str] = {}
        """Per peer, the name it claims (in the order of the claims)."""
        self._shown: dict[str, str] = {}

    def shown(self, peer_id: str) -> str | None:
        return self._shown.get(peer_id)

    def _holder(self, peer_id: str, name: str) -> str | None:
        key = name_key(name)
        if key == self._own_key:
            return self._own_id
        for other, shown in self._shown.items():
            if other != peer_id and name_key(shown) == key:
                return other
        return None

    def claim(self, peer_id: str, name: str) -> tuple[str, str | None]:
        """``peer_id`` claims ``name`` (already :func:`clean_name`-ed): what to
        show for it, and, if this claim is newly refused, the id of the member
        holding the name (``None`` for a claim repeated: it was reported)."""
        if self._claimed.get(peer_id) == name and peer_id in self._shown:
            return self._shown[peer_id], None
        self._claimed.pop(peer_id, None)
        self._claimed[peer_id] = name  # a new claim goes to the end of the queue
        holder = self._holder(peer_id, name)
        self._shown[peer_id] = name if holder is None else REFUSED_MARK + peer_id
        return self._shown[peer_id], holder

    def forget(self, peer_id: str) -> list[tuple[str, str]]:
        """``peer_id`` left: (peer id, name) of each refused claim shown now."""
        self._claimed.pop(peer_id, None)
        self._shown.pop(peer_id, None)
        freed: list[tuple[str, str]] = []
        for other, name in self._claimed.items():
            if self._shown.get(other) != name and self._holder(other, name) is None:
                self._shown[other] = name
                freed.append((other, name))
        return freed
