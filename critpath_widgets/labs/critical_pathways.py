"""Lab 02, critical pathways: sites and neurons, contribution scores, sparsity, scope,
contribution versus pruning pathways, local linearity, and the random control.

Every expected value is computed live from the model, where reasonable by a route of
its own: a float64 copy of the model whose activation modules multiply their output by
a fixed mask (:class:`PathwayNetwork`), plain autograd for the scores and gradients,
and a global threshold found with ``torch.kthvalue``; the engine's explanations give
only what the question is about (the IntGrad, DGR and random pathways).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..errors import InputError, InputTypeError
from .exercises import Exercise, Mistake
from .lab import Lab

#: the photo, the sparsities and method options every exercise states
IMAGE = "coffee"
SPARSITY = 0.7
INTGRAD_STEPS = 2
DGR_STEPS = 20
RANDOM_SEED = 0
FD_STEP = 1e-3
#: the site of exercise q1: its label in ``layer_summary()`` and its module path
Q1_LABEL, Q1_MODULE, Q1_CALL = "block 1 · ReLU6 #2", "_blocks.1._swish", 2


class PathwayNetwork:
    """The network restricted to a fixed pathway: a private copy of the model (float64 by
    default) whose activation modules multiply their output by a fixed 0/1 mask.

    With the masks fixed, a ReLU-family network is piecewise linear in its input, so a
    finite difference of this network can be compared with the pathway gradient.
    """

    def __init__(
        self,
        model: nn.Module,
        kinds: Sequence[str],
        masks: Sequence[torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        odd = sorted({k for k in kinds if k.startswith("F.")})
        if odd:
            raise InputError(f"PathwayNetwork masks activation modules only, not {odd}")
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # gradients, where wanted, are taken w.r.t. the input
        self.modules = [
            (name, m) for name, m in self.model.named_modules() if type(m).__name__ in set(kinds)
        ]
        for _, m in self.modules:
            if hasattr(m, "inplace"):
                m.inplace = False  # the recorded outputs must stay as they were
        self.sites = len(kinds)
        self.masks = None if masks is None else [m.to(dtype) for m in masks]
        self.outputs: list[tuple[str, torch.Tensor]] = []
        for name, m in self.modules:
            m.register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            i = len(self.outputs)
            if self.masks is not None:
                if i >= len(self.masks):
                    raise InputError(f"the copy calls more activations than the {self.sites} sites")
                out = out * self.masks[i]
            self.outputs.append((name, out))
            return out

        return hook

    def __call__(self, z: torch.Tensor, record: bool = False) -> torch.Tensor:
        """Logits of the restricted network for the batch ``z``; with ``record`` the site
        outputs stay in :attr:`outputs` (module path, tensor), in call order."""
        self.outputs = []
        try:
            logits = self.model(z.to(self.dtype))
        finally:
            calls = len(self.outputs)
            if not record:
                self.outputs = []
        if calls != self.sites:
            raise InputError(
                f"the copy made {calls} activation calls, the explanation has {self.sites} sites"
            )
        return logits


def pathway_network(e: Any, sample: int = 0, dtype: torch.dtype = torch.float64) -> PathwayNetwork:
    """The network restricted to ``e``'s pathway (sample ``sample``'s masks), its masks
    fixed: call it on any input, e.g. ``pathway_network(e)(x + h * d)``."""
    from ..engine import Explanation

    if not isinstance(e, Explanation):
        raise InputTypeError(f"expected an Explanation, got {type(e).__name__}")
    masks = [m[sample].float() for m in e.pathway.masks]
    return PathwayNetwork(e.explainer.model, e.site_kinds, masks, dtype)


def centre_direction(x: torch.Tensor) -> torch.Tensor:
    """The direction of exercise q8: +1 on every channel of the central 64 x 64 pixels."""
    d = torch.zeros_like(x)
    h, w = x.shape[-2:]
    d[..., h // 2 - 32 : h // 2 + 32, w // 2 - 32 : w // 2 + 32] = 1.0
    return d


def jaccard_masks(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """|A ∩ B| / |A ∪ B| of two lists of bool masks (sample 0)."""
    inter = sum(int((p[0] & q[0]).sum()) for p, q in zip(a, b, strict=True))
    union = sum(int((p[0] | q[0]).sum()) for p, q in zip(a, b, strict=True))
    return inter / union


class Context:
    """The lab's model, photo and explanations, each computed on first use and kept."""

    @cached_property
    def bundle(self) -> Any:
        """The offline EfficientNet-Lite0 bundle."""
        import critpath_widgets as cw

        return cw.load_model()

    @cached_property
    def x(self) -> torch.Tensor:
        """The preprocessed photo, (1, 3, 224, 224)."""
        import critpath_widgets as cw

        return self.bundle.preprocess(cw.sample_image(IMAGE))[None]

    @cached_property
    def ex(self) -> Any:
        """A PathwayExplainer of the model."""
        import critpath_widgets as cw

        return cw.PathwayExplainer(self.bundle.model)

    @cached_property
    def e(self) -> Any:
        """NeuronMCT at sparsity 0.7, global."""
        return self.ex.explain(self.x, method="neuron_mct", sparsity=SPARSITY)

    @cached_property
    def target(self) -> int:
        """The explained class (the predicted one)."""
        return int(self.e.target[0])

    @cached_property
    def full(self) -> PathwayNetwork:
        """The float64 copy without masks, recording its site outputs."""
        return PathwayNetwork(self.bundle.model, self.e.site_kinds)

    @cached_property
    def recorded(self) -> dict[str, Any]:
        """Site outputs, NeuronMCT scores |a dy/da| and the input gradient, by autograd."""
        xg = self.x.double().requires_grad_(True)
        y = self.full(xg, record=True)[0, self.target]
        names = [n for n, _ in self.full.outputs]
        outs = [o for _, o in self.full.outputs]
        grads = torch.autograd.grad(y, [xg, *outs])
        self.full.outputs = []
        scores = [(o * g).abs().detach() for o, g in zip(outs, grads[1:], strict=True)]
        return {
            "names": names,
            "outputs": [o.detach() for o in outs],
            "scores": scores,
            "grad": grads[0],
            "logit": float(y.detach()),
        }

    def kept_by_global(self, sparsity: float) -> list[torch.Tensor]:
        """Masks of a global selection from the autograd scores: one threshold
        (``kthvalue``) over all neurons of all sites."""
        scores = self.recorded["scores"]
        flat = torch.cat([s.flatten() for s in scores])
        removed = round(sparsity * flat.numel())
        threshold = flat.kthvalue(removed).values if removed else -1.0
        return [s > threshold for s in scores]

    def pathway_logit(self, e: Any) -> float:
        """The target logit of ``e``'s pathway, by the float64 masked copy."""
        self.full.masks = [m[0].double() for m in e.pathway.masks]
        try:
            with torch.no_grad():
                return float(self.full(self.x)[0, self.target])
        finally:
            self.full.masks = None

    @cached_property
    def intgrad(self) -> Any:
        """NeuronIntGrad (``steps=2``) at sparsity 0.7."""
        return self.ex.explain(
            self.x, method="neuron_intgrad", sparsity=SPARSITY, steps=INTGRAD_STEPS
        )

    @cached_property
    def dgr(self) -> Any:
        """The pruning-objective (DGR) pathway, ``steps=20``, at sparsity 0.7."""
        return self.ex.explain(self.x, method="dgr", sparsity=SPARSITY, steps=DGR_STEPS)

    @cached_property
    def random(self) -> Any:
        """A random pathway (``seed=0``) at sparsity 0.7."""
        return self.ex.explain(self.x, method="random", sparsity=SPARSITY, seed=RANDOM_SEED)

    def dead_share(self, e: Any) -> float:
        """|pathway ∩ dead| / |pathway| from the recorded site outputs (dead: <= 0)."""
        outs = self.recorded["outputs"]
        masks = [m[0] for m in e.pathway.masks]
        dead = sum(int((m & (o[0] <= 0)).sum()) for m, o in zip(masks, outs, strict=True))
        return dead / sum(int(m.sum()) for m in masks)

    def direction_slope(self, g: torch.Tensor) -> float:
        """<g, d> for the centre direction d of q8."""
        return float((g.double() * centre_direction(self.x).double()).sum())

    def full_slope(self) -> float:
        """The full network's central finite difference along the q8 direction."""
        d = centre_direction(self.x).double()
        with torch.no_grad():
            up = self.full(self.x.double() + FD_STEP * d)[0, self.target]
            down = self.full(self.x.double() - FD_STEP * d)[0, self.target]
        return float((up - down) / (2 * FD_STEP))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def _site_output(c: Context, module: str, call: int) -> torch.Tensor:
    hits = [
        o for n, o in zip(c.recorded["names"], c.recorded["outputs"], strict=True) if n == module
    ]
    return hits[call - 1]


def _kept_share(c: Context, masks: Sequence[torch.Tensor]) -> float:
    scores = c.recorded["scores"]
    kept = sum(float((s * m).sum()) for s, m in zip(scores, masks, strict=True))
    return kept / sum(float(s.sum()) for s in scores)


def _overlap_of_first(c: Context) -> float:
    # |A ∩ B| / |A| when |A| = |B| = k: I / k = 2 J / (1 + J), J = I / (2 k - I)
    j = jaccard_masks(c.e.pathway.masks, c.intgrad.pathway.masks)
    return 2 * j / (1 + j)


def _stem_share(c: Context) -> float:
    return float(c.kept_by_global(0.9)[0].double().mean())


EXERCISES = [
    Exercise(
        "q1",
        f"How many neurons does the site labelled {Q1_LABEL!r} have (this 224 x 224 photo)?",
        expected=lambda c: _site_output(c, Q1_MODULE, Q1_CALL)[0].numel(),
        kind="int",
        hint="find the site whose layer_summary() label is exactly that text; a neuron is "
        "one element of the site's output: channel x row x column.",
        mistakes=[
            Mistake(
                lambda c: _site_output(c, Q1_MODULE, Q1_CALL).shape[1],
                "that is the number of channels; every (channel, row, column) is a neuron.",
            ),
            Mistake(
                lambda c: _site_output(c, Q1_MODULE, 1)[0].numel(),
                "that is the first call (#1) of the same ReLU6 module; the site is its "
                "second call (#2), after the strided depthwise convolution.",
            ),
            Mistake(
                lambda c: len(c.recorded["names"]),
                "that is the number of sites, not of neurons in one site.",
            ),
            Mistake(
                lambda c: sum(o.numel() for o in c.recorded["outputs"]),
                "that is every neuron of every site; the question asks for one site.",
            ),
        ],
    ),
    Exercise(
        "q2",
        "What share of the total NeuronMCT contribution (sum of the scores over all sites) "
        "does the pathway at sparsity 0.7 (global) keep?",
        expected=lambda c: _kept_share(c, c.kept_by_global(SPARSITY)),
        hint="sum e.scores over the kept neurons (e.pathway.masks) and divide by the sum of "
        "all scores; layer_summary() has the per-site totals too.",
        mistakes=[
            Mistake(
                lambda c: 1 - SPARSITY,
                "that is the share of neurons kept; the question asks for the share of "
                "contribution they carry.",
            ),
            Mistake(
                lambda c: 1 - _kept_share(c, c.kept_by_global(SPARSITY)),
                "that is the share removed; the question asks for the share kept.",
            ),
        ],
    ),
    Exercise(
        "q3",
        "Jaccard overlap |A ∩ B| / |A ∪ B| of the NeuronMCT and the NeuronIntGrad pathways "
        "(sparsity 0.7, global, IntGrad with steps=2), over all neurons?",
        expected=lambda c: jaccard_masks(c.e.pathway.masks, c.intgrad.pathway.masks),
        hint="count the neurons kept by both and by either over all sites, or use "
        "critpath_widgets.evaluation.jaccard(e, ei).overall.",
        mistakes=[
            Mistake(lambda c: 1.0, "that is a pathway compared with itself."),
            Mistake(
                lambda c: _overlap_of_first(c),
                "that is |A ∩ B| / |A| (both keep the same number of neurons); the "
                "Jaccard index divides by the union.",
            ),
        ],
    ),
    Exercise(
        "q4",
        "The target logit of the network restricted to the NeuronMCT pathway at sparsity 0.95?",
        expected=lambda c: c.pathway_logit(c.e.at_sparsity(0.95)),
        rtol=2e-3,
        hint="e.at_sparsity(0.95) reuses the scores; read its pathway_logits at the target.",
        mistakes=[
            Mistake(
                lambda c: c.recorded["logit"],
                "that is the full network's logit (e.logits); the restricted network's is "
                "in pathway_logits.",
            ),
            Mistake(
                lambda c: c.pathway_logit(c.e),
                "that is the pathway at sparsity 0.7; use e.at_sparsity(0.95).",
            ),
            Mistake(
                lambda c: float(c.e.at_sparsity(0.95).probabilities()[0, c.target]),
                "that is a probability; the question asks for the logit.",
            ),
        ],
    ),
    Exercise(
        "q5",
        "Cosine similarity between the pathway gradient at sparsity 0.9 (NeuronMCT, global, "
        "the full (1, 3, 224, 224) tensor) and the plain input gradient?",
        expected=lambda c: _cosine(c.e.at_sparsity(0.9).saliency, c.recorded["grad"]),
        hint="flatten e.at_sparsity(0.9).saliency and ex.gradient(x); cosine = a·b / (|a| |b|).",
        mistakes=[
            Mistake(
                lambda c: _cosine(c.e.at_sparsity(0.0).saliency, c.recorded["grad"]),
                "that is sparsity 0, where the pathway is the whole network.",
            ),
            Mistake(
                lambda c: _cosine(c.e.saliency, c.recorded["grad"]),
                "that is sparsity 0.7 (e itself); use e.at_sparsity(0.9).",
            ),
        ],
    ),
    Exercise(
        "q6",
        "Global selection at sparsity 0.9: what share of the neurons of the first site "
        "('stem · ReLU6') does the pathway keep?",
        expected=_stem_share,
        hint="one threshold over all sites keeps different shares per site: count the kept "
        "neurons of site 0 (e.pathway.masks[0], or layer_summary()[0].kept_pct / 100).",
        mistakes=[
            Mistake(
                lambda c: 0.1,
                "0.1 is what the per-layer scope (scope='layer') keeps in every site; the "
                "global scope has one threshold for all sites.",
            ),
            Mistake(lambda c: 1 - _stem_share(c), "that is the share removed, not kept."),
            Mistake(
                lambda c: 100 * _stem_share(c),
                "that is a percentage; give a share between 0 and 1.",
            ),
        ],
    ),
    Exercise(
        "q7",
        "What share of the DGR (pruning objective, steps=20) pathway's neurons at sparsity "
        "0.7 were dead (output <= 0) on the photo?",
        expected=lambda c: c.dead_share(c.dgr),
        rtol=1e-3,
        hint="critpath_widgets.evaluation.dead_share(ed).overall: |pathway ∩ dead| / |pathway|.",
        mistakes=[
            Mistake(
                lambda c: c.dead_share(c.e),
                "that is the NeuronMCT pathway (a dead neuron contributes 0, so it keeps "
                "none); the question asks about DGR's.",
            ),
            Mistake(
                lambda c: (
                    sum(int((o <= 0).sum()) for o in c.recorded["outputs"])
                    / sum(o.numel() for o in c.recorded["outputs"])
                ),
                "that is the share of ALL neurons that are dead (network_overall); the "
                "question asks for the pathway's.",
            ),
            Mistake(lambda c: 1 - c.dead_share(c.dgr), "that is the share alive, not dead."),
        ],
    ),
    Exercise(
        "q8",
        "Local linearity: with the masks of e (sparsity 0.7) fixed, the central finite "
        "difference (f(x + h d) - f(x - h d)) / (2 h) of the target logit, h = 1e-3, d = "
        "+1 on the central 64 x 64 pixels (centre_direction(x))?",
        expected=lambda c: c.direction_slope(c.e.saliency),
        rtol=2e-2,
        hint="f = pathway_network(e); f(z)[0, target] is the restricted network's logit. The "
        "answer should match (e.saliency * d).sum().",
        mistakes=[
            Mistake(
                lambda c: c.direction_slope(c.recorded["grad"]),
                "that is the full network's slope (plain gradient); keep the pathway's "
                "masks fixed: pathway_network(e).",
            ),
            Mistake(
                lambda c: c.full_slope(),
                "that is a finite difference of the full network; use pathway_network(e).",
            ),
            Mistake(
                lambda c: 2 * FD_STEP * c.direction_slope(c.e.saliency),
                "divide the difference by 2 h.",
            ),
        ],
    ),
    Exercise(
        "q9",
        "The control: the target logit of a random pathway (seed=0) at sparsity 0.7?",
        expected=lambda c: c.pathway_logit(c.random),
        rtol=2e-3,
        atol=1e-3,
        hint="ex.explain(x, method='random', sparsity=0.7, seed=0), then its pathway_logits "
        "at the target.",
        mistakes=[
            Mistake(
                lambda c: c.recorded["logit"],
                "that is the full network's logit; read pathway_logits.",
            ),
            Mistake(
                lambda c: c.pathway_logit(c.e),
                "that is the NeuronMCT pathway; use method='random'.",
            ),
        ],
    ),
]

LAB = Lab("critical_pathways", "Critical pathways lab", Context, EXERCISES)
"""The lab, opened by ``open_lab("critical_pathways")``."""
