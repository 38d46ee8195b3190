"""Choosing the critical pathway from neuron scores.

:mod:`.policy` says what is kept (sparsity, global or per-site scope, neuron or channel
granularity, validation of those options); :mod:`.kernels` does the exact top-k
selections fast (sampled brackets, sorted :class:`~.kernels.Ranking` keys).
"""

from .kernels import Ranking, count_ones, topk_mask, topk_segments
from .policy import (
    GRANULARITIES,
    SCOPES,
    Selection,
    check_finite_scores,
    check_scope,
    check_sparsity,
    keep_count,
    select,
)

__all__ = [
    "GRANULARITIES",
    "SCOPES",
    "Ranking",
    "Selection",
    "check_finite_scores",
    "check_scope",
    "check_sparsity",
    "count_ones",
    "keep_count",
    "select",
    "topk_mask",
    "topk_segments",
]
