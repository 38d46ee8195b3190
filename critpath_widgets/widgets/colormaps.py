"""Colour lookup tables (LUTs) for the attribution overlay, computed with matplotlib.

A LUT is a ``(256, 4)`` uint8 RGBA array: row ``i`` is ``cmap(i / 255)``, i.e.
``matplotlib.colormaps[name](np.linspace(0, 1, 256), bytes=True)``. The browser
looks a value ``t`` in [0, 1] up at row ``min(floor(t * 256), 255)``, the same
rule matplotlib applies to a 256-entry colormap.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np

from ..errors import InputError

#: Names offered in the overlay's colormap picker by default: diverging maps
#: first (for signed attributions), then sequential ones.
DEFAULT_COLORMAPS: tuple[str, ...] = (
    "RdBu_r",
    "coolwarm",
    "bwr",
    "seismic",
    "PiYG",
    "viridis",
    "inferno",
    "magma",
    "plasma",
    "hot",
    "gray",
    "jet",
)

#: Bytes of one LUT: 256 RGBA entries.
LUT_BYTES = 256 * 4


def _registry():
    import matplotlib

    return matplotlib.colormaps


def is_colormap(name: object) -> bool:
    """Whether ``name`` names a colormap matplotlib knows."""
    return isinstance(name, str) and name in _registry()


def lut(name: str) -> np.ndarray:
    """The ``(256, 4)`` uint8 RGBA lookup table of matplotlib colormap ``name``.

    Raises :class:`~critpath_widgets.errors.InputError` naming the bad value (with
    close matches, if any) when matplotlib has no such colormap.
    """
    registry = _registry()
    if not isinstance(name, str):
        raise InputError(f"colormap name must be a string, not {type(name).__name__}: {name!r}")
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InputError(
            f"unknown colormap {name!r}: matplotlib has no colormap of that name{hint}"
        )
    table = registry[name](np.linspace(0.0, 1.0, 256), bytes=True)
    return np.ascontiguousarray(table, dtype=np.uint8).reshape(256, 4)


def pack_luts(names: Iterable[str]) -> bytes:
    """The LUTs of ``names`` one after another: ``len(names) * 256 * 4`` bytes."""
    tables = [lut(n) for n in names]
    if not tables:
        return b""
    return np.concatenate(tables, axis=0).tobytes()


__all__ = ["DEFAULT_COLORMAPS", "LUT_BYTES", "is_colormap", "lut", "pack_luts"]
