"""Pathway selection: which neurons (or channels) to keep, globally or per site."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ...errors import InputError, OptionError
from .. import memory
from ..layout import SiteLayout
from .kernels import Ranking, topk_mask, topk_segments

SCOPES = ("global", "layer")
GRANULARITIES = ("neuron", "channel")


class Selection(NamedTuple):
    """What a pathway keeps: the share of neurons removed, over all sites at once
    ("global") or per site ("layer"), ranking neurons or whole channels."""

    sparsity: float
    scope: str
    granularity: str


def check_sparsity(sparsity: object) -> float:
    """Validate a sparsity value: a real number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        if not (isinstance(sparsity, torch.Tensor) and sparsity.numel() == 1):
            raise InputError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
        sparsity = float(sparsity)
    s = float(sparsity)
    if not math.isfinite(s) or not 0.0 <= s < 1.0:
        raise InputError(f"sparsity must be in [0, 1) (the share of neurons removed), got {s}")
    return s


def check_scope(scope: object, granularity: object) -> tuple[str, str]:
    """Validate scope and granularity names."""
    if scope not in SCOPES:
        raise OptionError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if granularity not in GRANULARITIES:
        raise OptionError(
            f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
        )
    return str(scope), str(granularity)


def keep_count(n: int, sparsity: float) -> int:
    """Number kept out of n at this sparsity: round((1 - sparsity) * n) (Python rounding)."""
    return min(n, max(0, round((1.0 - sparsity) * n)))


def channel_scores(flat: torch.Tensor, layout: SiteLayout) -> torch.Tensor:
    """(N, total channels): each channel's score is the sum of its neurons' scores (a
    channel of a channels-last or token site is a feature over all its positions)."""
    parts = [layout.by_channel(layout.slice(flat, i), i).sum(dim=-1) for i in range(len(layout))]
    return torch.cat(parts, dim=1)


def expand_channels(ch_mask: torch.Tensor, layout: SiteLayout) -> torch.Tensor:
    """Flat neuron mask (N, total) from a channel mask (N, total channels): every neuron
    of a channel, at every position, takes the channel's value."""
    n = ch_mask.shape[0]
    out = memory.empty((n, layout.total), torch.bool, ch_mask.device)
    o = 0
    for i, c in enumerate(layout.channels()):
        dst = layout.by_channel(layout.slice(out, i), i)  # (N, c, positions) view of out
        dst.copy_(ch_mask[:, o : o + c, None].expand_as(dst))
        o += c
    return out


def select(
    flat: torch.Tensor,
    layout: SiteLayout,
    sparsity: float,
    scope: str = "global",
    granularity: str = "neuron",
    ranking: Ranking | None = None,
) -> torch.Tensor:
    """The pathway kept at ``sparsity`` as 0/1 weights (N, total) of the scores' dtype.

    global: one threshold per sample over every site; layer: the same share in each site.
    neuron granularity ranks neurons; channel granularity ranks channels by summed score.
    A :class:`Ranking` of ``flat`` (sorted once) makes neuron selection one comparison.
    """
    dtype = flat.dtype
    if granularity == "channel":
        ch = channel_scores(flat, layout)
        if scope == "global":
            ch_mask = topk_mask(ch, keep_count(ch.shape[1], sparsity))
        else:
            segments, o = [], 0
            for c in layout.channels():
                segments.append((o, o + c, keep_count(c, sparsity)))
                o += c
            ch_mask = topk_segments(ch, segments)
        return expand_channels(ch_mask, layout).to(dtype)
    fast = ranking is not None and ranking.usable and ranking.scores is flat
    if scope == "global":
        k = keep_count(layout.total, sparsity)
        return ranking.weights(k) if fast else topk_mask(flat, k, dtype)
    spans = list(zip(layout.offsets, layout.sizes, strict=True))
    if not fast:
        return topk_segments(flat, [(o, o + n, keep_count(n, sparsity)) for o, n in spans], dtype)
    out = memory.empty_like(flat)
    for i, (o, size) in enumerate(spans):
        ranking.weights(keep_count(size, sparsity), o, o + size, out=layout.slice(out, i))
    return out


def pass_weights(
    ranking: Ranking,
    layout: SiteLayout,
    selection: Selection,
    dtype: torch.dtype,
    sorted_selection: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor], Callable[[int], None] | None]:
    """The pathway of ``ranking``'s scores at ``selection`` as the masked pass reads it:
    0/1 weights (N, total) of ``dtype``, their per-site views, and ``fill`` or None.

    With ``sorted_selection`` (a new sparsity for cached scores), a global neuron
    selection whose threshold needs no cut among ties is left to ``fill(i)``: one
    comparison per site, made as the masked pass reaches the site, so that the weights
    are still in the cache for the product. Otherwise the weights are selected here
    (from the sorted keys when ``sorted_selection``).
    """
    flat = ranking.scores
    sparsity, scope, granularity = selection
    t = None
    if (
        sorted_selection
        and scope == "global"
        and granularity == "neuron"
        and flat.dtype == dtype
        and ranking.usable
    ):
        t = ranking.threshold(keep_count(layout.total, sparsity))
    if t is None:
        weights = select(
            flat, layout, sparsity, scope, granularity, ranking if sorted_selection else None
        ).to(dtype)
        return weights, layout.views(weights), None
    weights = memory.empty_like(flat)
    scores, masks = layout.views(flat), layout.unversioned_views(weights)

    def fill(i: int) -> None:
        torch.ge(scores[i], t.view(-1, *[1] * (scores[i].dim() - 1)), out=masks[i])

    return weights, masks, fill


def check_finite_scores(flat: torch.Tensor, total: torch.Tensor | None = None) -> None:
    """Scores must be finite for a meaningful ranking (one reduction, not an elementwise test:
    the scores are non-negative, so their sum is finite exactly when every score is,
    barring overflow, which would be just as unusable). ``total``: their sum, if known."""
    if not bool(torch.isfinite(flat.sum() if total is None else total)):
        raise InputError(
            "contribution scores are not finite (the model produced inf/NaN gradients)"
        )
