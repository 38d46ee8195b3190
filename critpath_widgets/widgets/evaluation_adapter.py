"""The evaluation panel's one door to ``critpath_widgets.evaluation`` (the metrics).

Every function here calls the real module when it is installed and normalises its
result to the small records below, so the panel depends on this file only. Until that
module lands, each function falls back to a minimal local computation (marked
FALLBACK): delete the fallbacks, and keep the normalisation, once it is in.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.sites import eval_mode

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


def real_module() -> Any | None:
    """``critpath_widgets.evaluation`` if installed, else ``None`` (imported lazily)."""
    try:
        return importlib.import_module("critpath_widgets.evaluation")
    except ImportError:
        return None


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
    random pixel order (the random-order baseline curve)."""
    mod = real_module()
    if mod is not None:
        sal = saliency_input(map2d if map2d is not None else np.zeros(x.shape[2:]), x)
        fn = getattr(mod, kind)
        if map2d is None:
            if hasattr(mod, "random_baseline"):
                return _curve(
                    mod.random_baseline(
                        model, x, kind=kind, target=target, steps=steps, baseline=baseline
                    )
                )
            return _curve(
                fn(model, x, sal, target=target, steps=steps, baseline=baseline, random_order=True)
            )
        return _curve(fn(model, x, sal, target=target, steps=steps, baseline=baseline))
    return _fallback_curve(kind, model, x, map2d, target, steps, baseline, seed)


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[str],
    target: int,
    metric: str = "spearman_abs",
    map_of: Callable[[nn.Module, str], np.ndarray] | None = None,
    progress: Progress = None,
) -> Sanity:
    """Similarity (``metric``) of each method's map to its original after each step of
    cascading randomisation; ``map_of(model, method)`` is the (H, W) map (fallback only)."""
    mod = real_module()
    if mod is not None:
        from ..attribution import PATHWAY_METHODS

        names = {v: k for k, v in PATHWAY_METHODS.items()}  # engine -> attribute name
        r = mod.sanity_check(
            model, x, [names.get(m, m) for m in methods], target=target, metrics=(metric,)
        )
        sim = {m: np.asarray(r.similarity[names.get(m, m)][metric], np.float64) for m in methods}
        return Sanity(list(r.steps), sim)
    return _fallback_sanity(model, x, methods, metric, map_of, progress)


def dead_share(e: Any) -> tuple[float, dict[str, float]]:
    """Share of the pathway's kept neurons that are dead (zero contribution): overall, per site."""
    mod = real_module()
    if mod is not None:
        return _overall_and_sites(mod.dead_share(e, sample=0), e)
    # FALLBACK: a dead ReLU has a zero activation, hence a zero contribution
    per, dead_all, kept_all = {}, 0, 0
    for name, mask, c in zip(e.site_names, e.pathway.masks, e.contributions, strict=False):
        kept = mask[0].bool()
        dead = int((kept & (c[0] == 0)).sum())
        per[name] = dead / max(int(kept.sum()), 1)
        dead_all, kept_all = dead_all + dead, kept_all + int(kept.sum())
    return dead_all / max(kept_all, 1), per


def jaccard(e1: Any, e2: Any) -> tuple[float, dict[str, float]]:
    """Jaccard overlap of two pathways (kept neurons): overall and per site."""
    mod = real_module()
    if mod is not None:
        return _overall_and_sites(mod.jaccard(e1, e2, sample=0), e1)
    # FALLBACK
    per, inter_all, union_all = {}, 0, 0
    for name, a, b in zip(e1.site_names, e1.pathway.masks, e2.pathway.masks, strict=False):
        inter, union = int((a[0] & b[0]).sum()), int((a[0] | b[0]).sum())
        per[name] = inter / union if union else 1.0
        inter_all, union_all = inter_all + inter, union_all + union
    return (inter_all / union_all if union_all else 1.0), per


def retained(
    e: Any, sparsities: Sequence[float], target: int, progress: Progress = None
) -> tuple[np.ndarray, np.ndarray]:
    """Target logit and probability through the pathway at each sparsity (same scores)."""
    mod = real_module()
    if mod is not None:
        r = mod.retained(e.explainer, e.inputs, e.method, list(sparsities), target=target)
        logits = np.asarray(getattr(r, "logits", r), dtype=np.float64).reshape(len(sparsities), -1)
        probs = np.asarray(getattr(r, "probabilities", np.full_like(logits, np.nan)))
        return logits[:, 0], probs.reshape(len(sparsities), -1)[:, 0]
    # FALLBACK: one masked pass per sparsity from the cached scores
    logits, probs = [], []
    for i, s in enumerate(sparsities):
        if progress is not None:
            progress(i, len(sparsities))
        pl = e.at_sparsity(float(s)).pathway_logits.detach().float()
        logits.append(float(pl[0, target]))
        probs.append(float(torch.softmax(pl[0], 0)[target]))
    return np.array(logits), np.array(probs)


def _overall_and_sites(r: Any, e: Any) -> tuple[float, dict[str, float]]:
    """(overall, per site) from a real result: a tuple, or an object with both fields."""
    if isinstance(r, tuple):
        overall, per = r
    else:
        overall, per = r.overall, getattr(r, "per_site", {})
    if not isinstance(per, dict):
        per = dict(zip(e.site_names, np.asarray(per, dtype=np.float64).tolist(), strict=False))
    return float(overall), {k: float(v) for k, v in per.items()}


# ------------------------------------------------------------------- FALLBACK section
def _fallback_curve(kind, model, x, map2d, target, steps, baseline, seed) -> Curve:
    """FALLBACK deletion/insertion: pixels in order of decreasing map value (random if
    ``map2d`` is None) replaced by the blurred (or zero) image, one batched forward."""
    h, w = x.shape[2:]
    if map2d is None:
        order = torch.from_numpy(np.random.default_rng(seed).permutation(h * w))
    else:
        order = torch.as_tensor(np.asarray(map2d, np.float64).reshape(-1)).argsort(descending=True)
    ref = _blurred(x) if baseline == "blur" else torch.zeros_like(x)
    start, end = (x, ref) if kind == "deletion" else (ref, x)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    batch = []
    for f in fractions:
        moved = torch.zeros(h * w, dtype=torch.bool)
        moved[order[: int(round(f * h * w))]] = True
        m = moved.view(1, 1, h, w).to(x.device)
        batch.append(torch.where(m, end, start))
    with torch.no_grad(), eval_mode(model):
        probs = torch.softmax(model(torch.cat(batch)).float(), dim=1)[:, target]
    scores = probs.cpu().numpy().astype(np.float64)
    return Curve(fractions, scores, float(np.trapezoid(scores, fractions)))


def _blurred(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])


def _fallback_sanity(model, x, methods, metric, map_of, progress) -> Sanity:
    """FALLBACK cascading randomisation on a copy: re-initialise the layers with weights
    from the output down, one more per step, and compare each map with the original."""
    from scipy.stats import spearmanr

    net = copy.deepcopy(model)
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    layers.reverse()
    original = {m: map_of(net, m) for m in methods}
    sim = {m: np.zeros(len(layers)) for m in methods}
    gen = torch.Generator().manual_seed(0)
    for i, (_, layer) in enumerate(layers):
        if progress is not None:
            progress(i, len(layers))
        with torch.no_grad():
            noise = torch.randn(layer.weight.shape, generator=gen).to(layer.weight)
            layer.weight.copy_(noise * layer.weight.std())
        for m in methods:
            a, b = original[m].reshape(-1), map_of(net, m).reshape(-1)
            if metric == "spearman_abs":
                a, b = np.abs(a), np.abs(b)
            rho = spearmanr(a, b).statistic
            sim[m][i] = 0.0 if np.isnan(rho) else float(rho)
    return Sanity([n for n, _ in layers], sim)


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
