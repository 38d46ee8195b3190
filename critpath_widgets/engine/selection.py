"""Exact top-k selection per row without sorting millions of scores.

``topk_mask(scores, k)`` keeps exactly ``k`` entries of every row of a (rows, n) tensor:
the largest scores, ties at the threshold broken by position (lowest index first).
A sorted random sample of each row brackets the k-th largest value; only the few
entries inside the bracket are sorted exactly. Everything stays on the scores' device.
"""

from __future__ import annotations

import math

import torch

_SAMPLE = 65536
_GEN_SEED = 0x5EED


def count_true(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a 2-D bool tensor (summing bools directly is several times slower)."""
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32).long()


def _sample_index(n: int, m: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(_GEN_SEED)
    return torch.randint(0, n, (m,), generator=g).to(device)


def kth_largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of every row of a 2-D tensor (1 <= k <= n), exactly."""
    rows, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if n <= 4 * _SAMPLE:
        return torch.topk(scores, k, dim=1, largest=True, sorted=False).values.amin(dim=1)
    m = _SAMPLE
    sample = scores[:, _sample_index(n, m, scores.device)]
    sample = sample.sort(dim=1, descending=True).values
    p = k / n
    r = p * m
    d = 4.0 * math.sqrt(m * p * (1 - p)) + 8
    i_hi = int(math.floor(r - d))  # rank of the upper bracket value in the sample
    i_lo = int(math.ceil(r + d))  # rank of the lower bracket value
    inf = torch.full((rows,), math.inf, dtype=scores.dtype, device=scores.device)
    hi = sample[:, i_hi] if i_hi >= 0 else inf
    lo = sample[:, i_lo] if i_lo < m else -inf
    # Entries above the bracket are kept for sure; the k-th lies in [lo, hi].
    above = count_true(scores > hi[:, None])
    inside = (scores >= lo[:, None]) & (scores <= hi[:, None])
    counts = count_true(inside)
    need = k - above  # rank of the k-th largest inside the bracket, 1-based
    ok = (need >= 1) & (need <= counts)
    result = hi.clone()
    # A bracket holding a single value (ties, e.g. many zero scores) needs no sorting.
    sort_rows = ok & (lo < hi)
    if bool(sort_rows.any()):
        inside &= sort_rows[:, None]
        counts = torch.where(sort_rows, counts, 0)
        vals = scores[inside]  # row-major: grouped by row
        row_id = torch.repeat_interleave(torch.arange(rows, device=scores.device), counts)
        if rows == 1:
            vals = torch.sort(vals, descending=True).values
        else:  # sort by value, then stably by row: descending values grouped by row
            order = torch.sort(vals, descending=True, stable=True).indices
            order = order[torch.sort(row_id[order], stable=True).indices]
            vals = vals[order]
        offsets = torch.cumsum(counts, 0) - counts
        pick = (offsets + need - 1).clamp(min=0, max=max(vals.numel() - 1, 0))
        result[sort_rows] = vals[pick][sort_rows]
    bad = (~ok).nonzero().flatten().tolist()
    for r_ in bad:  # the bracket missed (very unlikely): exact fallback for that row
        result[r_] = torch.topk(scores[r_], k, largest=True, sorted=False).values.min()
    return result


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping exactly ``k`` entries per row: largest first, ties by position."""
    if scores.dim() != 2:
        raise ValueError("scores must be 2-D (rows, n)")
    rows, n = scores.shape
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    thr = kth_largest(scores, k)[:, None]
    mask = scores >= thr
    if bool((count_true(mask) == k).all()):
        return mask
    # Ties at the threshold: keep all strictly greater, then the first tied entries.
    gt = scores > thr
    need = k - count_true(gt)
    eq = scores == thr
    pos = eq.nonzero()  # (M, 2), row-major, so positions ascend within each row
    per_row = count_true(eq)
    first = torch.cumsum(per_row, 0) - per_row
    rank = torch.arange(pos.shape[0], device=scores.device) - first[pos[:, 0]]
    pos = pos[rank < need[pos[:, 0]]]
    gt[pos[:, 0], pos[:, 1]] = True
    return gt
