"""Exact top-k selection per row without sorting millions of scores.

``topk_mask(scores, k)`` keeps exactly ``k`` entries of every row of a (rows, n) tensor:
the largest scores, ties broken by position (lowest index first), as a full stable
sort would. A sorted random sample of each row brackets the k-th largest value; only
the few entries inside the bracket are sorted. Cost: two comparisons over the scores
and a few passes over bytes, all on the scores' device (no copy to the CPU or numpy).
"""

from __future__ import annotations

import math

import torch

_SAMPLE = 65536
_SEED = 0x5EED


def count_true(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a 2-D bool tensor (summing bools directly is several times slower)."""
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32).long()


def _exact_small(scores: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, order[:, :k], True)


def _bracket(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi) that very likely enclose the k-th largest value."""
    rows, n = scores.shape
    g = torch.Generator(device="cpu").manual_seed(_SEED)
    idx = torch.randint(0, n, (_SAMPLE,), generator=g).to(scores.device)
    sample = torch.sort(scores[:, idx], dim=1, descending=True).values
    p = k / n
    r = p * _SAMPLE
    d = 4.0 * math.sqrt(_SAMPLE * p * (1 - p)) + 8
    i_hi, i_lo = math.floor(r - d), math.ceil(r + d)
    hi = sample[:, i_hi] if i_hi >= 0 else torch.full((rows,), math.inf, device=scores.device)
    lo = sample[:, i_lo] if i_lo < _SAMPLE else torch.full((rows,), -math.inf,
                                                             device=scores.device)
    return lo.to(scores.dtype), hi.to(scores.dtype)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping exactly ``k`` entries per row: largest first, ties by position."""
    if scores.dim() != 2:
        raise ValueError("scores must be 2-D (rows, n)")
    rows, n = scores.shape
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if n <= 4 * _SAMPLE:
        return _exact_small(scores, k)
    lo, hi = _bracket(scores, k)
    mask = scores >= lo[:, None]  # everything that may be kept
    c_ge = count_true(mask)
    band = scores <= hi[:, None]
    band &= mask  # lo <= s <= hi: the undecided entries
    pos = band.nonzero()  # (M, 2), row-major: positions ascend within a row
    del band
    rid = pos[:, 0]
    c_band = torch.bincount(rid, minlength=rows)
    need = k - (c_ge - c_band)  # how many band entries each row keeps
    ok = (need >= 0) & (need <= c_band)
    vals = scores[rid, pos[:, 1]]
    # order band entries by value (descending; stable keeps ties in position order),
    # then stably by row, so each row's entries come best first
    order = torch.sort(vals, descending=True, stable=True).indices
    if rows > 1:
        order = order[torch.sort(rid[order], stable=True).indices]
    first = torch.cumsum(c_band, 0) - c_band
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=scores.device) - first[rid[order]]
    drop = rank >= need[rid]
    mask[rid[drop], pos[drop, 1]] = False
    for r in (~ok).nonzero().flatten().tolist():  # bracket missed (very unlikely): exact
        mask[r] = _exact_small(scores[r : r + 1], k)[0]
    return mask
