"""Colour lookup tables (LUTs) and the colour mapping of the attribution overlay.

Numpy only (matplotlib on first use, no widget library): the widget and the static
figures (:mod:`critpath_widgets.report`) colour a map with the same code.

A LUT is a ``(256, 4)`` uint8 RGBA array: row ``i`` is ``cmap(i / 255)``, i.e.
``matplotlib.colormaps[name](np.linspace(0, 1, 256), bytes=True)``. The browser
looks a value ``t`` in [0, 1] up at row ``min(floor(t * 256), 255)``, the same
rule matplotlib applies to a 256-entry colormap.
"""

from __future__ import annotations

import difflib
import math
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


def normalised_vmax(
    values: np.ndarray, sign: str = "signed", clip_percentile: float = 99.5
) -> float:
    """The value mapped to the end of the colour scale, as the browser computes it."""
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)]
    if sign == "positive":
        mags = v[v > 0]
    elif sign == "negative":
        mags = -v[v < 0]
    else:
        mags = np.abs(v)
        mags = mags[mags > 0]
    if mags.size == 0:
        return 1.0
    s = np.sort(mags).astype(np.float64)
    pos = min(100.0, max(0.0, float(clip_percentile))) / 100.0 * (s.size - 1)
    lo = math.floor(pos)
    hi = min(s.size - 1, lo + 1)
    vmax = float(s[lo] + (s[hi] - s[lo]) * (pos - lo))
    return vmax if math.isfinite(vmax) and vmax > 0 else 1.0


def colorize(
    values: np.ndarray,
    lut: np.ndarray,
    sign: str = "signed",
    opacity: float = 0.6,
    vmax: float | None = None,
    clip_percentile: float = 99.5,
) -> np.ndarray:
    """RGBA uint8 (H, W, 4) of the map layer exactly as the browser builds it
    (before it is scaled onto the image)."""
    v = np.asarray(values, dtype=np.float32).astype(np.float64)
    if vmax is None:
        vmax = normalised_vmax(v, sign, clip_percentile)
    if sign == "positive":
        t = np.maximum(v, 0) / vmax
    elif sign == "negative":
        t = np.maximum(-v, 0) / vmax
    elif sign == "absolute":
        t = np.abs(v) / vmax
    else:
        t = (v / vmax + 1) / 2
    finite = np.isfinite(t)
    t = np.clip(np.where(finite, t, 0), 0, 1)
    idx = np.clip(np.floor(t * 256), 0, 255).astype(np.intp)
    lut = np.asarray(lut, dtype=np.uint8).reshape(256, 4)
    rgba = lut[idx].copy()
    op = min(1.0, max(0.0, float(opacity)))
    mag = np.abs(2 * t - 1) if sign == "signed" else t
    alpha = lut[idx, 3] / 255.0 * op * mag
    rgba[..., 3] = np.floor(alpha * 255 + 0.5).astype(np.uint8)
    rgba[~finite] = 0
    return rgba


__all__ = [
    "DEFAULT_COLORMAPS",
    "LUT_BYTES",
    "colorize",
    "is_colormap",
    "lut",
    "normalised_vmax",
    "pack_luts",
]
