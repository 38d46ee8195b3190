"""Lab 03, "Evaluating the pathway gradient": deletion, insertion, random order and the
cascading-randomisation sanity check, on one photo and EfficientNet-Lite0.

The context loads its own model and photo (it never reads the notebook's variables) and
computes every expensive quantity once: the three maps (the pathway gradient of
NeuronMCT at sparsity 0.7, the plain input gradient by a plain autograd call, Grad-CAM),
their deletion curves, the pathway's insertion curve, the random-order curves and one
sanity check. Where a route of its own exists the expected value takes it: the deletion
AUC of q1 and the single-step probabilities of q3 and q5 come from a hand-written masked
copy of the photo (pixels ranked by the map, replaced by a blurred copy), not from
``critpath_widgets.evaluation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .exercises import Exercise, Mistake
from .lab import Lab

PHOTO = "coffee"
SPARSITY = 0.7
"""The pathway's sparsity: the paper's for its sanity checks."""
STEPS = 10
"""Steps of every deletion / insertion curve of the lab (step k: k * 10 % of the pixels)."""
BLUR_SIGMA = 5.0
"""The blur baseline of the deletion curves: a Gaussian of sigma 5 px, kernel 31 px."""
SANITY_METHODS = ("pathway_mct", "gradient", "guided_backprop", "gradcam")
"""The methods of the sanity check, as ``critpath_widgets.attribute`` names them."""
SANITY_LAYERS = 3
"""The cascade stops after the top three parameterised modules (_fc, _bn1, _conv_head)."""
FAIL_AT = 0.9
"""q7: a method fails when its ``spearman_abs`` after the logit layer alone is >= this."""
MAPS = ("pathway", "gradient", "gradcam")
"""The maps q2 chooses from."""


def _memo(ctx: SimpleNamespace, key: str, make: Callable[[], Any]) -> Any:
    """``make()`` computed once per context (for the values only a mistake needs)."""
    if key not in ctx.memo:
        ctx.memo[key] = make()
    return ctx.memo[key]


def _plain_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """d logit[target] / d x by one autograd call: the plain gradient map, shaped like x."""
    xg = x.clone().requires_grad_(True)
    model(xg)[0, target].backward()
    return xg.grad.detach()


def replaced_probabilities(
    ctx: SimpleNamespace, saliency: torch.Tensor, counts: Sequence[int], least_first: bool = False
) -> np.ndarray:
    """The target's softmax probability after the first ``count`` pixels of the map's
    order (most relevant first, or least relevant first) are replaced by the blurred
    photo, one value per count: the lab's own route to points of a deletion curve."""
    _, _, h, w = ctx.x.shape
    relevance = saliency.abs().amax(dim=1).reshape(-1)  # per pixel: the largest |channel|
    order = torch.argsort(relevance if least_first else -relevance, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(h * w)
    images = [torch.where((rank < c).view(1, 1, h, w), ctx.blurred, ctx.x) for c in counts]
    with torch.no_grad():
        logits = ctx.model(torch.cat(images))
    return logits.double().softmax(-1)[:, ctx.target].numpy()


def _plain_deletion_auc(ctx: SimpleNamespace, saliency: torch.Tensor) -> float:
    """Area under the deletion curve (probability against the share of pixels removed,
    trapezoid) at ``STEPS`` steps, from :func:`replaced_probabilities`."""
    p = ctx.x.shape[2] * ctx.x.shape[3]
    counts = [k * p // STEPS for k in range(STEPS + 1)]
    probs = replaced_probabilities(ctx, saliency, counts)
    return float(np.trapezoid(probs, np.array(counts) / p))


def setup() -> SimpleNamespace:
    """Model, photo, the three maps, their curves and one sanity check, computed once."""
    from torchvision.transforms.functional import gaussian_blur

    from .. import evaluation as ev
    from ..attribution import attribute
    from ..engine import PathwayExplainer
    from ..models import load_model, sample_image

    bundle = load_model()
    x = bundle.preprocess(sample_image(PHOTO))[None]
    model = bundle.model.eval()
    with torch.no_grad():
        logits = model(x)
    target = int(logits.argmax(1))
    k = 2 * int(np.ceil(3 * BLUR_SIGMA)) + 1
    e = PathwayExplainer(model).explain(x, target, "neuron_mct", SPARSITY)
    maps = {
        "pathway": e.saliency.detach(),
        "gradient": _plain_gradient(model, x, target),
        "gradcam": attribute(model, x, "gradcam", target=target),
    }
    ctx = SimpleNamespace(
        ev=ev,
        bundle=bundle,
        model=model,
        x=x,
        target=target,
        p0=float(logits.double().softmax(1)[0, target]),
        blurred=gaussian_blur(x, [k, k], [BLUR_SIGMA, BLUR_SIGMA]),
        maps=maps,
        memo={},
    )
    curve = {"target": target, "steps": STEPS}
    ctx.deletion = {m: ev.deletion(model, x, s, **curve) for m, s in maps.items()}
    ctx.insertion = {"pathway": ev.insertion(model, x, maps["pathway"], **curve)}
    ctx.random = {
        kind: ev.random_baseline(model, x, kind, **curve) for kind in ("deletion", "insertion")
    }
    ctx.sanity = ev.sanity_check(
        model,
        x,
        list(SANITY_METHODS),
        target=target,
        metrics=("spearman", "spearman_abs", "ssim"),
        layers=SANITY_LAYERS,
    )
    return ctx


# ----------------------------------------------------------------- expected values


def _auc(result: Any) -> float:
    """Image 0's area under a curve result."""
    return float(result.auc[0])


def _insertion(ctx: SimpleNamespace, m: str) -> Any:
    """The insertion curve of map ``m`` (the pathway's is in the context; others lazily)."""
    if m not in ctx.insertion:
        ctx.insertion[m] = ctx.ev.insertion(
            ctx.model, ctx.x, ctx.maps[m], target=ctx.target, steps=STEPS
        )
    return ctx.insertion[m]


def lowest_deletion(ctx: SimpleNamespace) -> str:
    """q2: the map whose deletion curve has the smallest area."""
    return min(MAPS, key=lambda m: _auc(ctx.deletion[m]))


def _morf_10(ctx: SimpleNamespace) -> tuple[float, float]:
    """(p, p'): target probability before and after the top 10 % pathway pixels are blurred."""
    p = ctx.x.shape[2] * ctx.x.shape[3]
    probs = _memo(
        ctx, "morf10", lambda: replaced_probabilities(ctx, ctx.maps["pathway"], [0, p // 10])
    )
    return float(probs[0]), float(probs[1])


def _lerf_10(ctx: SimpleNamespace, m: str = "pathway") -> float:
    """Target probability with the 10 % least relevant pixels of map ``m`` blurred."""
    p = ctx.x.shape[2] * ctx.x.shape[3]
    return _memo(
        ctx,
        f"lerf10-{m}",
        lambda: float(replaced_probabilities(ctx, ctx.maps[m], [p // 10], least_first=True)[0]),
    )


def lerf_change(ctx: SimpleNamespace) -> float:
    """q5: |p' - p| / p after blurring the 10 % least relevant pixels of the pathway map."""
    return abs(_lerf_10(ctx) - ctx.p0) / ctx.p0


def _sanity(ctx: SimpleNamespace, method: str, metric: str, step: int) -> float:
    """The sanity check's ``metric`` for ``method`` after ``step`` randomisation steps."""
    return float(ctx.sanity.similarity[method][metric][step])


def _fails(ctx: SimpleNamespace, step: int = 1, fail: bool = True) -> set[str]:
    """The methods whose ``spearman_abs`` at ``step`` is >= FAIL_AT (or, fail=False, below)."""
    return {m for m in SANITY_METHODS if (_sanity(ctx, m, "spearman_abs", step) >= FAIL_AT) == fail}


# ----------------------------------------------------------------------- exercises

_LAST = SANITY_LAYERS  # index of the last step of the cascade (step 0: nothing randomised)

EXERCISES = [
    Exercise(
        "q1",
        "The deletion AUC of the pathway map (NeuronMCT, sparsity 0.7) for the predicted "
        f"class, steps={STEPS}, blur baseline.",
        lambda c: _plain_deletion_auc(c, c.maps["pathway"]),
        hint="ev.deletion(model, x, e.saliency, target=target, steps=10) returns a "
        "CurveResult; its .auc holds one area per image (take element 0).",
        mistakes=[
            Mistake(
                lambda c: _auc(c.insertion["pathway"]),
                "that is the insertion AUC; the question asks for deletion (pixels removed).",
            ),
            Mistake(
                lambda c: float(
                    np.trapezoid(c.deletion["pathway"].logits[0], c.deletion["pathway"].fractions)
                ),
                "that is the area under the logit curve; the AUC is taken over the softmax "
                "probability (.scores), which is what .auc already holds.",
            ),
            Mistake(
                lambda c: _auc(c.random["deletion"]),
                "that is the random order's AUC (the chance level); pass the pathway map "
                "(e.saliency) as the saliency.",
            ),
            Mistake(
                lambda c: _auc(c.deletion["gradient"]),
                "that is the plain gradient's deletion AUC; use the pathway gradient e.saliency.",
            ),
            Mistake(
                lambda c: _memo(
                    c,
                    "del20",
                    lambda: _auc(c.ev.deletion(c.model, c.x, c.maps["pathway"], target=c.target)),
                ),
                f"that is the AUC at the default 20 steps; pass steps={STEPS}.",
            ),
        ],
    ),
    Exercise(
        "q2",
        f"Which map has the lowest deletion AUC (steps={STEPS}, blur): 'pathway', "
        "'gradient' or 'gradcam'?",
        lowest_deletion,
        kind="choice",
        choices=MAPS,
        hint="compute ev.deletion for each of the three maps and compare their .auc[0].",
        mistakes=[
            Mistake(
                lambda c: max(MAPS, key=lambda m: _auc(c.deletion[m])),
                "that one has the highest deletion AUC: its curve falls slowest. For "
                "deletion, lower is better.",
            ),
            Mistake(
                lambda c: max(MAPS, key=lambda m: _auc(_insertion(c, m))),
                "that map wins on insertion (highest insertion AUC); the question asks "
                "about deletion.",
            ),
        ],
    ),
    Exercise(
        "q3",
        "What fraction of the target probability is left after the 10 % most relevant "
        f"pixels of the pathway map are blurred? (p' / p, steps={STEPS})",
        lambda c: _morf_10(c)[1] / _morf_10(c)[0],
        hint="step 1 of a 10-step deletion curve removes the top 10 %: divide .scores[0, 1] "
        "by .scores[0, 0].",
        mistakes=[
            Mistake(
                lambda c: _morf_10(c)[1],
                "that is the probability itself; the question asks which fraction of the "
                "original probability is left (divide by .scores[0, 0]).",
            ),
            Mistake(
                lambda c: 1 - _morf_10(c)[1] / _morf_10(c)[0],
                "that is the fraction lost; the question asks what is left.",
            ),
            Mistake(
                lambda c: c.deletion["pathway"].logits[0, 1] / c.deletion["pathway"].logits[0, 0],
                "that is a ratio of logits; the curve's .scores are softmax probabilities.",
            ),
            Mistake(
                lambda c: (
                    c.insertion["pathway"].scores[0, 1] / c.insertion["pathway"].scores[0, -1]
                ),
                "that is the insertion curve (only the top 10 % put back into the blurred "
                "photo); use the deletion curve.",
            ),
        ],
    ),
    Exercise(
        "q4",
        "The pathway map's insertion AUC minus the random order's insertion AUC "
        f"(steps={STEPS}, blur, seed 0).",
        lambda c: _auc(c.insertion["pathway"]) - _auc(c.random["insertion"]),
        hint="ev.insertion(...) and ev.random_baseline(model, x, 'insertion', ...) with the "
        "same target and steps; subtract the random one.",
        mistakes=[
            Mistake(
                lambda c: _auc(c.random["insertion"]) - _auc(c.insertion["pathway"]),
                "wrong sign: the map's AUC minus the random order's.",
            ),
            Mistake(
                lambda c: _auc(c.deletion["pathway"]) - _auc(c.random["deletion"]),
                "those are the deletion curves; the question asks about insertion.",
            ),
            Mistake(
                lambda c: _auc(c.random["deletion"]) - _auc(c.deletion["pathway"]),
                "that is deletion's margin over random order; the question asks about insertion.",
            ),
            Mistake(
                lambda c: _auc(c.insertion["pathway"]) - _auc(c.random["deletion"]),
                "the random baseline must be of the same kind: random_baseline(model, x, "
                "'insertion', ...), not the default 'deletion'.",
            ),
            Mistake(
                lambda c: _auc(c.insertion["pathway"]),
                "that is the map's insertion AUC alone; subtract the random order's.",
            ),
        ],
    ),
    Exercise(
        "q5",
        "LeRF: the relative change |p' - p| / p of the target probability after the 10 % "
        "LEAST relevant pixels of the pathway map are blurred.",
        lerf_change,
        hint="at step 9 of a 10-step insertion curve only the 10 % least relevant pixels are "
        "still blurred: compare .scores[0, -2] with .scores[0, -1] (the photo itself).",
        mistakes=[
            Mistake(
                lambda c: abs(_morf_10(c)[1] - _morf_10(c)[0]) / _morf_10(c)[0],
                "that blurs the 10 % MOST relevant pixels (MoRF); LeRF removes the least "
                "relevant ones.",
            ),
            Mistake(
                lambda c: (_lerf_10(c) - c.p0) / c.p0,
                "take the absolute value |p' - p|: the paper's output change has no sign.",
            ),
            Mistake(
                lambda c: abs(_lerf_10(c) - c.p0),
                "divide by the original probability p: the change is relative.",
            ),
            Mistake(
                lambda c: abs(c.insertion["pathway"].scores[0, 1] - c.p0) / c.p0,
                "that is step 1 of the insertion curve (only the top 10 % put back); LeRF "
                "is the second-to-last point, with only the bottom 10 % still blurred.",
            ),
        ],
    ),
    Exercise(
        "q6",
        "Sanity check (pathway_mct, gradient, guided_backprop, gradcam; layers=3, seed 0): "
        "the SSIM of the pathway map after the last randomisation step, against the original.",
        lambda c: _sanity(c, "pathway_mct", "ssim", _LAST),
        hint="s.similarity['pathway_mct']['ssim'] has one value per step; step 0 is the "
        "unchanged model, the last entry (index -1) the last step.",
        mistakes=[
            Mistake(
                lambda c: _sanity(c, "pathway_mct", "ssim", 1),
                "that is after the first step (the logit layer alone); take the last one.",
            ),
            Mistake(
                lambda c: _sanity(c, "pathway_mct", "spearman_abs", _LAST),
                "that is the rank correlation of the absolute maps; the question asks SSIM.",
            ),
            Mistake(
                lambda c: _sanity(c, "pathway_mct", "spearman", _LAST),
                "that is the signed rank correlation; the question asks SSIM.",
            ),
            Mistake(
                lambda c: _sanity(c, "gradient", "ssim", _LAST),
                "that is the plain gradient's curve; take 'pathway_mct'.",
            ),
            Mistake(lambda c: 1.0, "step 0 compares the map with itself: it is always 1."),
        ],
    ),
    Exercise(
        "q7",
        "Which methods FAIL the sanity check, i.e. keep a rank correlation of the absolute "
        f"maps (spearman_abs) >= {FAIL_AT} once the logit layer alone is randomised?",
        _fails,
        kind="set",
        hint="step 1 of the sanity check randomises the logit layer (_fc) only; collect "
        f"the methods m with s.similarity[m]['spearman_abs'][1] >= {FAIL_AT}.",
        mistakes=[
            Mistake(
                lambda c: _fails(c, fail=False),
                "those are the methods that pass (their maps change with the model).",
            ),
            Mistake(
                lambda c: _fails(c, step=0),
                "step 0 is the unchanged model (similarity 1 by definition); read step 1.",
            ),
        ],
    ),
]

LAB = Lab("evaluation", "Lab 3: evaluating the pathway gradient", setup, EXERCISES)
"""The lab, its context built on the first check."""
