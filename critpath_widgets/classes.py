"""Finding a class by name, for the command line's ``--target`` and the explorer's
target picker (each words its own messages)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def match_class(query: str, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """(matches, close): the classes named ``query`` exactly (case ignored), else those
    whose name contains it; when there are none, up to 5 close names by difflib."""
    key = query.strip().lower()
    lowered = [n.lower() for n in names]
    found = [i for i, n in enumerate(lowered) if n == key] or [
        i for i, n in enumerate(lowered) if key in n
    ]
    if found:
        return found, []
    close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
    return [], [lowered.index(c) for c in close]
