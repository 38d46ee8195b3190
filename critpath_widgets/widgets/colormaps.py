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

#: Names offered in the overlay's colormap picker by default: the default heat map
#: first, then diverging maps (for signed attributions), then sequential ones.
DEFAULT_COLORMAPS: tuple[str, ...] = (
    "inferno",
    "RdBu_r",
    "coolwarm",
    "bwr",
    "seismic",
    "PiYG",
    "viridis",
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
    fade: bool = True,
    gamma: float = 1.0,
) -> np.ndarray:
    """RGBA uint8 (H, W, 4) of the map layer exactly as the browser builds it
    (before it is scaled onto the image).

    ``fade`` (the overlay): alpha = opacity x LUT alpha x magnitude ** ``gamma``
    (magnitude = ``min(|v| / vmax, 1)``), so weak pixels leave the photo visible and
    ``gamma > 1`` keeps faint speckle from veiling it; ``fade=False`` (the map alone):
    alpha = the LUT's alpha.
    """
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
    if fade:
        op = min(1.0, max(0.0, float(opacity)))
        mag = np.abs(2 * t - 1) if sign == "signed" else t
        g = float(gamma) if math.isfinite(gamma) and gamma > 0 else 1.0
        alpha = lut[idx, 3] / 255.0 * op * mag**g
        rgba[..., 3] = np.floor(alpha * 255 + 0.5).astype(np.uint8)
    rgba[~finite] = 0
    return rgba


def shown_part(values: np.ndarray, sign: str = "signed") -> np.ndarray:
    """The part of the map a sign mode shows, as float32: ``v`` (signed), ``max(v, 0)``
    (positive), ``min(v, 0)`` (negative), ``|v|`` (absolute).

    Invariant: ``colorize(shown_part(v, s), lut, s)`` equals ``colorize(v, lut, s)``
    (same colours, same ``vmax``), so display smoothing may work on this part alone.
    """
    v = np.asarray(values, dtype=np.float32)
    if sign == "positive":
        return np.maximum(v, 0)
    if sign == "negative":
        return np.minimum(v, 0)
    if sign == "absolute":
        return np.abs(v)
    return v.copy()


def display_map(values: np.ndarray, sign: str = "signed", smooth: float = 0.0) -> np.ndarray:
    """The map as it is displayed: :func:`shown_part`, blurred by a Gaussian of sigma
    ``smooth`` x the map's longer side (``smooth = 0``: unblurred).

    For display only: single-pixel speckle of gradient maps becomes regions a person
    can see. The numbers the engine returns (and the overlay's hover readout) stay raw;
    smoothing the shown part (not the signed map) keeps opposite-signed speckle from
    cancelling in the magnitude modes. Returns (H, W) float32.
    """
    from scipy.ndimage import gaussian_filter

    part = shown_part(values, sign)
    sigma = float(smooth) * max(part.shape) if part.ndim == 2 else 0.0
    if not (math.isfinite(sigma) and sigma > 0) or part.size == 0:
        return part
    return gaussian_filter(part, sigma=sigma, mode="nearest").astype(np.float32)


#: Weights of the luminance the canvas "saturation" blend mode uses (W3C compositing).
LUMA = (0.3, 0.59, 0.11)


def backdrop(photo: np.ndarray, dim: float) -> np.ndarray:
    """The photo behind the heat layer, muted by ``dim`` in [0, 1]: mixed with its grey
    (luminance :data:`LUMA`) by ``dim``, then darkened by ``dim / 2``.

    The browser paints the same with two canvas fills (a grey "saturation" blend at
    alpha ``dim``, then black at alpha ``dim / 2``). Returns uint8 (H, W, 3).
    """
    rgb = np.asarray(photo)[..., :3].astype(np.float64)
    d = min(1.0, max(0.0, float(dim)))
    if d == 0:
        return np.asarray(photo)[..., :3].astype(np.uint8)
    lum = rgb @ np.asarray(LUMA)
    out = ((1 - d) * rgb + d * lum[..., None]) * (1 - d / 2)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


__all__ = [
    "DEFAULT_COLORMAPS",
    "LUMA",
    "backdrop",
    "display_map",
    "shown_part",
    "LUT_BYTES",
    "colorize",
    "is_colormap",
    "lut",
    "normalised_vmax",
    "pack_luts",
]
