"""Similarity of two 2-D saliency maps, as in Adebayo et al. 2018 and the paper's
sanity checks: Spearman rank correlation of the signed and of the absolute maps, SSIM
and the Pearson correlation of HOG features (both of the absolute maps scaled to
[0, 1] by their maximum, so that only the shape of the map counts)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from ..errors import OptionError


def _unit(m: np.ndarray) -> np.ndarray:
    """|m| scaled to [0, 1] by its maximum (a blank map stays 0)."""
    a = np.abs(m)
    top = a.max()
    return a / top if top > 0 else a


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the signed maps (NaN when one is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the absolute maps."""
    return _spearman(np.abs(a), np.abs(b))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the unit-scaled absolute maps (window 7, or the largest odd side below)."""
    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(_unit(a), _unit(b), data_range=1.0, win_size=win))


def _hog_features(m: np.ndarray) -> np.ndarray:
    """HOG features (9 orientations, 8x8-pixel cells, 2x2-cell blocks; smaller cells for
    maps under 16 pixels a side) of the unit-scaled absolute map."""
    cell = max(1, min(8, min(m.shape) // 2))
    return hog(_unit(m), orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))


def _hog(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG features of the two maps."""
    fa, fb = _hog_features(a), _hog_features(b)
    if np.ptp(fa) == 0 or np.ptp(fb) == 0:
        return float("nan")
    return float(np.corrcoef(fa, fb)[0, 1])


#: similarity metric name -> f(map a, map b) -> float for two (H, W) maps: Spearman rank
#: correlation of the signed or absolute maps, SSIM, Pearson correlation of HOG features
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "spearman": _spearman,
    "spearman_abs": _spearman_abs,
    "ssim": _ssim,
    "hog": _hog,
}


def check_metrics(metrics: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The metric names, checked (one name or a non-empty sequence of them)."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise OptionError(f"unknown metric(s) {bad or names!r}; choose from {', '.join(METRICS)}")
    return names


def similarity(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """``metric`` between two (H, W) maps (1.0 for identical non-constant maps)."""
    check_metrics(metric)
    return METRICS[metric](np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
