"""The evaluation panel's one door to :mod:`critpath_widgets.evaluation` (the metrics).

Every function here calls the evaluation module and normalises its result to the small
records below (one image, numpy), so the panel depends on this file only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

Progress = Callable[[int, int], None] | None


@dataclass
class Curve:
    """A deletion / insertion curve of one image: target probability per fraction."""

    fractions: np.ndarray  # (steps + 1,)
    scores: np.ndarray  # (steps + 1,)
    auc: float


@dataclass
class Sanity:
    """Cascading randomisation: similarity to the original map after each step."""

    steps: list[str]  # layer names, randomised cumulatively from the output
    similarity: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (steps,)


def real_module() -> Any:
    """:mod:`critpath_widgets.evaluation`, imported on first use (it loads scipy and
    scikit-image, which an explorer that never evaluates need not pay for)."""
    return importlib.import_module("critpath_widgets.evaluation")


def _curve(result: Any) -> Curve:
    """A result with ``fractions``, ``scores`` (N, steps+1) and ``auc`` -> image 0's Curve."""
    scores = np.asarray(result.scores, dtype=np.float64)
    scores = scores[0] if scores.ndim == 2 else scores
    auc = np.asarray(result.auc, dtype=np.float64).reshape(-1)
    return Curve(np.asarray(result.fractions, dtype=np.float64), scores, float(auc[0]))


def saliency_input(map2d: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """A (H, W) map as the (1, C, H, W) saliency the metrics take (repeated over C)."""
    m = torch.as_tensor(np.asarray(map2d, dtype=np.float32)).to(x.device)
    return m[None, None].expand(1, x.shape[1], *m.shape).to(x.dtype).contiguous()


def curve(
    kind: str,
    model: nn.Module,
    x: torch.Tensor,
    map2d: np.ndarray | None,
    target: int,
    steps: int = 20,
    baseline: str = "blur",
    seed: int = 0,
) -> Curve:
    """``kind`` "deletion" or "insertion" ordered by ``map2d``; ``map2d`` None: a
    seeded random pixel order (the random-order baseline curve)."""
    mod = real_module()
    if map2d is None:
        return _curve(
            mod.random_baseline(
                model, x, kind=kind, target=target, steps=steps, baseline=baseline, seed=seed
            )
        )
    sal = saliency_input(map2d, x)
    fn = getattr(mod, kind)
    return _curve(fn(model, x, sal, target=target, steps=steps, baseline=baseline))


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    methods: Mapping[str, Callable[..., torch.Tensor]],
    target: int,
    metric: str = "spearman_abs",
    progress: Progress = None,
) -> Sanity:
    """Similarity (``metric``) of each method's map to its original after each step of
    cascading randomisation; ``methods`` maps a name to ``f(net, x, target)``, called on
    each randomised copy of the model."""
    r = real_module().sanity_check(
        model, x, dict(methods), target=target, metrics=(metric,), progress=progress
    )
    sim = {m: np.asarray(r.similarity[m][metric], np.float64) for m in methods}
    return Sanity(list(r.steps), sim)


def dead_share(e: Any) -> tuple[float, dict[str, float]]:
    """Share of the pathway's kept neurons that were dead (output <= 0): overall, per site."""
    return _overall_and_sites(real_module().dead_share(e, sample=0), e)


def jaccard(e1: Any, e2: Any) -> tuple[float, dict[str, float]]:
    """Jaccard overlap of two pathways (kept neurons): overall and per site."""
    return _overall_and_sites(real_module().jaccard(e1, e2, sample=0), e1)


def retained(
    e: Any, sparsities: Sequence[float], target: int, progress: Progress = None
) -> tuple[np.ndarray, np.ndarray]:
    """Target logit and probability through the pathway at each sparsity (one scoring,
    then one masked pass per sparsity)."""
    r = real_module().retained(e.explainer, e.inputs, e.method, list(sparsities), target=target)
    return (
        np.asarray(r.pathway_logit, np.float64)[0],
        np.asarray(r.pathway_probability, np.float64)[0],
    )


def _overall_and_sites(r: Any, e: Any) -> tuple[float, dict[str, float]]:
    """(overall, per site) from a real result: a tuple, or an object with both fields."""
    if isinstance(r, tuple):
        overall, per = r
    else:
        overall, per = r.overall, getattr(r, "per_site", {})
    if not isinstance(per, dict):
        per = dict(zip(e.site_names, np.asarray(per, dtype=np.float64).tolist(), strict=False))
    return float(overall), {k: float(v) for k, v in per.items()}


__all__ = [
    "Curve",
    "Sanity",
    "curve",
    "dead_share",
    "jaccard",
    "real_module",
    "retained",
    "saliency_input",
    "sanity_check",
]
