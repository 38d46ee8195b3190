"""What the explorer's secondary panels (evaluation, comparison, channel gallery) share
to read what the explorer shows: the picture on show, and a context function that
holds the explorer weakly (a panel must not keep the explorer alive)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import InputError
from .caches import ImageEntry

T = TypeVar("T")


def shown_entry(w: Any, waiting: str = "wait for the explorer to show a result") -> ImageEntry:
    """The cache entry of the picture on show; InputError saying why there is none
    (``waiting``: nothing is on show yet)."""
    if w._shown is None or w._session.explainer is None:
        raise InputError(waiting)
    entry = w._images.get(w._shown["image_id"])
    if entry is None or not entry.ready:
        raise InputError("the picture on show is gone: pick it again")
    return entry


def weak_context(w: Any, make: Callable[[Any], T]) -> Callable[[], T]:
    """``context()`` for a panel: ``make(explorer)``, the explorer held weakly."""
    ref = weakref.ref(w)

    def context() -> T:
        explorer = ref()
        if explorer is None:
            raise InputError("the explorer was closed")
        return make(explorer)

    return context
