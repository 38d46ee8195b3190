"""Pathway analysis of explanations (the paper's section on pathways): how many kept
neurons were dead on the input, how much two pathways overlap, and how much of the
target's output a pathway retains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import Explanation, PathwayExplainer, passes
from ..errors import InputError, InputTypeError
from ._common import Result, axes, check_int


def _sample(e: Explanation, sample: int) -> int:
    """``sample`` checked against ``e``'s batch, as a non-negative index."""
    if not isinstance(e, Explanation):
        raise InputTypeError(f"expected an Explanation, got {type(e).__name__}")
    n = e.saliency.shape[0]
    if isinstance(sample, bool) or not isinstance(sample, int) or not -n <= sample < n:
        raise InputError(f"sample {sample!r} out of range for a batch of {n}")
    return sample % n


def site_outputs(e: Explanation, sample: int | None = None) -> list[torch.Tensor]:
    """Every site's output on ``e``'s inputs with all neurons on, recorded by one forward
    pass of the same net the explanation ran (hence exactly the activations it scored)."""
    acts: list[torch.Tensor] = []

    def record(i: int, name: str, out: torch.Tensor) -> None:
        # a copy: the model may write into a site output later in the pass
        acts.append(out.detach().clone() if sample is None else out[sample].detach().clone())

    ex = e.explainer
    with ex._session(e.inputs) as st, torch.no_grad():
        st.hooks.names.extend(e.site_names)  # the pass checks the site count against them
        passes.run(st, e.inputs, record)
    return acts


@dataclass
class DeadShare(Result):
    """Share of a pathway's neurons that were dead (output <= 0) on the input."""

    #: the explanation's selection method
    method: str
    #: the pathway's sparsity
    sparsity: float
    #: the sites, in call order (the order of the per-site arrays)
    site_names: list[str]
    #: |pathway ∩ dead| / |pathway| over all sites
    overall: float
    #: the same per site, (sites,) (NaN where a site keeps no neuron)
    per_site: np.ndarray
    #: kept neurons per site, (sites,)
    kept: np.ndarray
    #: how many of the kept neurons are dead, per site, (sites,)
    kept_dead: np.ndarray
    #: share of all neurons that are dead (what a random pathway would keep, on average)
    network_overall: float
    #: the same per site, (sites,)
    network_per_site: np.ndarray

    def plot(self, ax: Any = None) -> Any:
        """Dead share per site, pathway against the whole network; returns the axes."""
        _, ax = axes(ax)
        i = np.arange(len(self.site_names))
        ax.bar(i - 0.2, self.per_site, 0.4, label=f"pathway ({self.overall:.2f})")
        everyone = f"all neurons ({self.network_overall:.2f})"
        ax.bar(i + 0.2, self.network_per_site, 0.4, label=everyone)
        ax.set_xticks(i, self.site_names, rotation=90, fontsize="x-small")
        ax.set_ylabel("share dead (output <= 0)")
        ax.set_title(f"Dead neurons in the {self.method} pathway, sparsity {self.sparsity:g}")
        ax.legend(fontsize="small")
        return ax


def dead_share(e: Explanation, sample: int = 0) -> DeadShare:
    """Share of ``e``'s pathway neurons whose output is <= 0 on its input (overall and per
    site): the paper's dead share, |pathway ∩ dead| / |pathway|."""
    sample = _sample(e, sample)
    acts = site_outputs(e, sample)
    masks = [m[sample] for m in e.pathway.masks]
    kept, kept_dead, dead, total = [], [], [], []
    for a, m in zip(acts, masks, strict=True):
        assert a.shape == m.shape  # the same sites, in the same order, as the pathway
        d = a <= 0
        kept.append(int(m.sum()))
        kept_dead.append(int((m & d).sum()))
        dead.append(int(d.sum()))
        total.append(a.numel())
    kept_a, kd, dead_a, tot = (np.array(v, dtype=np.int64) for v in (kept, kept_dead, dead, total))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_site = kd / kept_a
    return DeadShare(
        e.method,
        e.sparsity,
        list(e.site_names),
        float(kd.sum() / kept_a.sum()) if kept_a.sum() else float("nan"),
        per_site,
        kept_a,
        kd,
        float(dead_a.sum() / tot.sum()),
        dead_a / tot,
    )


@dataclass
class Jaccard(Result):
    """Overlap |A ∩ B| / |A ∪ B| of two pathways' kept neurons."""

    #: the two explanations' selection methods
    methods: tuple[str, str]
    #: the sites, in call order (the order of the per-site arrays)
    site_names: list[str]
    #: |A ∩ B| / |A ∪ B| over all sites (NaN when neither keeps a neuron)
    overall: float
    #: per site, (sites,) (NaN where neither keeps a neuron)
    per_site: np.ndarray
    #: per site |A ∩ B|, (sites,)
    intersection: np.ndarray
    #: per site |A ∪ B|, (sites,)
    union: np.ndarray

    def plot(self, ax: Any = None) -> Any:
        """Jaccard index per site with the overall one as a line; returns the axes."""
        _, ax = axes(ax)
        i = np.arange(len(self.site_names))
        ax.bar(i, self.per_site)
        ax.axhline(self.overall, color="k", ls="--", lw=1, label=f"overall {self.overall:.3f}")
        ax.set_xticks(i, self.site_names, rotation=90, fontsize="x-small")
        ax.set_ylabel("Jaccard index")
        ax.set_ylim(0, 1)
        ax.set_title(f"Pathway overlap: {self.methods[0]} vs {self.methods[1]}")
        ax.legend(fontsize="small")
        return ax


def jaccard(e1: Explanation, e2: Explanation, sample: int = 0) -> Jaccard:
    """Jaccard index of the neurons kept by two explanations of the same input (overall
    and per site)."""
    sample = _sample(e1, sample)
    _sample(e2, sample)
    if e1.site_names != e2.site_names or e1.pathway.neurons != e2.pathway.neurons:
        raise InputError("the two explanations have different sites: explain with one model")
    if e1.inputs.shape != e2.inputs.shape or not torch.equal(
        e1.inputs[sample], e2.inputs[sample].to(e1.inputs)
    ):
        raise InputError(f"sample {sample} is not the same input in both explanations")
    inter, union = [], []
    for a, b in zip(e1.pathway.masks, e2.pathway.masks, strict=True):
        a, b = a[sample], b[sample]
        inter.append(int((a & b).sum()))
        union.append(int((a | b).sum()))
    i_a, u_a = np.array(inter, dtype=np.int64), np.array(union, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_site = i_a / u_a
    overall = float(i_a.sum() / u_a.sum()) if u_a.sum() else float("nan")
    return Jaccard((e1.method, e2.method), list(e1.site_names), overall, per_site, i_a, u_a)


@dataclass
class Retained(Result):
    """What the network restricted to a pathway keeps of the target's output."""

    #: the selection method
    method: str
    #: the sparsities asked for, (S,)
    sparsities: np.ndarray
    #: the explained class per sample, (N,)
    target: np.ndarray
    #: the full network's target logit, (N,)
    logit: np.ndarray
    #: the full network's target probability, (N,)
    probability: np.ndarray
    #: the pathway's target logit at each sparsity, (N, S)
    pathway_logit: np.ndarray
    #: the pathway's target probability at each sparsity, (N, S)
    pathway_probability: np.ndarray
    #: the paper's output change |p' - p| / p, (N, S)
    change: np.ndarray
    #: whether the pathway's top class is the full network's top class, (N, S)
    argmax_kept: np.ndarray

    def plot(self, ax: Any = None) -> Any:
        """Mean target probability of the pathway per sparsity, the full network's as a
        line; returns the axes."""
        _, ax = axes(ax)
        ax.plot(self.sparsities, self.pathway_probability.mean(0), "o-", label=self.method)
        ax.axhline(self.probability.mean(), color="k", ls="--", lw=1, label="full network")
        ax.set_xlabel("sparsity (share of neurons removed)")
        ax.set_ylabel("target probability")
        ax.set_ylim(0, 1.02)
        ax.set_title("Output retained by the pathway")
        ax.legend(fontsize="small")
        return ax


def retained(
    explainer: PathwayExplainer | nn.Module,
    x: torch.Tensor,
    method: str = "neuron_mct",
    sparsities: Sequence[float] = (0.8, 0.9, 0.99),
    target: Any = None,
    **options: Any,
) -> Retained:
    """The restricted network's target logit and probability at each sparsity (one
    scoring, then one masked pass per sparsity), and whether its top class is kept.
    ``options`` go to ``explain`` (say ``seed`` for "random")."""
    if isinstance(explainer, nn.Module):
        explainer = PathwayExplainer(explainer)
    if not isinstance(explainer, PathwayExplainer):
        raise InputTypeError(f"expected a PathwayExplainer or a model, got {type(explainer)}")
    if isinstance(sparsities, int | float):
        sparsities = [sparsities]
    sp = [float(s) for s in sparsities]
    check_int(len(sp), "the number of sparsities", 1)
    e = explainer.explain(x, target, method, sp[0], **options)
    explanations = [e] + [e.at_sparsity(s) for s in sp[1:]]
    tgt = e.target[:, None]
    full = e.logits.double()
    top = full.argmax(1, keepdim=True)
    path = torch.stack([x.pathway_logits.double() for x in explanations], 1)  # (N, S, K)
    p = full.softmax(1).gather(1, tgt).squeeze(1)
    pp = path.softmax(2).gather(2, tgt[:, :, None].expand(-1, len(sp), 1)).squeeze(2)
    return Retained(
        method,
        np.array(sp),
        e.target.cpu().numpy(),
        full.gather(1, tgt).squeeze(1).cpu().numpy(),
        p.cpu().numpy(),
        path.gather(2, tgt[:, :, None].expand(-1, len(sp), 1)).squeeze(2).cpu().numpy(),
        pp.cpu().numpy(),
        ((pp - p[:, None]).abs() / p[:, None]).cpu().numpy(),
        (path.argmax(2) == top).cpu().numpy(),
    )
