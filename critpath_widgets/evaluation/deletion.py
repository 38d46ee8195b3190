"""Deletion and insertion curves (MoRF without retraining): how fast the target's
probability falls as the most relevant pixels are removed, or rises as they are added.

Pixels are ordered by the saliency reduced over channels (per pixel the largest
magnitude) and replaced by a baseline image in ``steps`` equal chunks; all ``steps + 1``
perturbed images of one input run as one batched forward pass (in chunks of
``batch_size``) in eval mode without gradients. A random pixel order (seeded) gives the
chance level of the same curve: a map is useful where it beats that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.sites import eval_mode, first_in_channels, unwrap_model
from ..engine.validate import check_input, resolve_target
from ..errors import InputError, ModelError, OptionError
from ._common import Result, axes, check_int, check_map, reduce_map, resolve_method

#: the baseline images pixels are replaced by: the image blurred, its per-channel mean, zeros
#: (a tensor that broadcasts to the input is accepted too)
BASELINES = ("blur", "mean", "zero")
#: the blur baseline's Gaussian: sigma in pixels; the kernel covers +- 3 sigma
BLUR_SIGMA = 5.0


@dataclass
class CurveResult(Result):
    """A deletion or insertion curve per image, its area and what it was made with."""

    #: "deletion" or "insertion"
    kind: str
    #: share of the pixels removed (deletion) or inserted (insertion) at each step, (S+1,)
    fractions: np.ndarray
    #: the target's softmax probability, (N, S+1)
    scores: np.ndarray
    #: the target's logit, (N, S+1)
    logits: np.ndarray
    #: area under each image's curve (trapezoid over the fractions), (N,)
    auc: np.ndarray
    #: the class whose probability is followed, per image, (N,)
    target: np.ndarray
    #: the baseline's name (one of :data:`BASELINES`), or "tensor" for a given tensor
    baseline: str
    #: "saliency" or "random" (the chance level)
    order: str
    #: the mean of :attr:`auc` over the images
    mean_auc: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean_auc = float(np.mean(self.auc))

    def plot(
        self, ax: Any = None, chance: CurveResult | None = None, label: str | None = None
    ) -> Any:
        """The mean curve (each image's faintly), with ``chance`` (a random-order curve)
        dashed; returns the axes."""
        _, ax = axes(ax)
        name = label or self.order
        line = ax.plot(
            self.fractions, self.scores.mean(0), label=f"{name} (AUC {self.mean_auc:.3f})"
        )[0]
        if self.scores.shape[0] > 1:
            ax.plot(self.fractions, self.scores.T, color=line.get_color(), alpha=0.2, lw=0.8)
        if chance is not None:
            ax.plot(
                chance.fractions,
                chance.scores.mean(0),
                "--",
                color="gray",
                label=f"random order (AUC {chance.mean_auc:.3f})",
            )
        what = "removed" if self.kind == "deletion" else "inserted"
        ax.set_xlabel(f"share of pixels {what} (most relevant first)")
        ax.set_ylabel("target probability")
        ax.set_title(f"{self.kind.capitalize()} curve, {self.baseline} baseline")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="best", fontsize="small")
        return ax


def baseline_image(x: torch.Tensor, baseline: str | torch.Tensor) -> torch.Tensor:
    """What removed pixels become: ``x`` blurred (Gaussian, sigma 5 px), each image's
    per-channel mean, zero, or a given tensor broadcast to ``x``."""
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.detach().to(x.device, x.dtype).expand_as(x)
        except RuntimeError as e:
            raise InputError(
                f"a baseline tensor must broadcast to x's shape {tuple(x.shape)}; "
                f"got {tuple(baseline.shape)}"
            ) from e
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        k = 2 * int(np.ceil(3 * BLUR_SIGMA)) + 1
        # the kernel may not exceed the image; reflection padding needs k // 2 < side
        side = min(x.shape[-2:])
        k = min(k, side - 1 if side % 2 == 0 else side)
        return gaussian_blur(x, [k, k], [BLUR_SIGMA, BLUR_SIGMA]) if k >= 3 else x.clone()
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "zero":
        return torch.zeros_like(x)
    raise OptionError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")


def pixel_ranks(
    saliency: torch.Tensor | None, n: int, hw: tuple[int, int], generator: torch.Generator | None
) -> torch.Tensor:
    """(N, H*W) position of every pixel in its image's removal order: most relevant first
    (ties by pixel index), or a random permutation from ``generator``."""
    p = hw[0] * hw[1]
    if saliency is None:
        orders = torch.stack([torch.randperm(p, generator=generator) for _ in range(n)])
    else:
        r = reduce_map(saliency, absolute=True).reshape(n, p).cpu()
        orders = torch.argsort(-r, dim=1, stable=True)
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(p).expand(n, p).contiguous())
    return ranks


def curve(
    kind: str,
    model: nn.Module,
    x: torch.Tensor,
    saliency: Any,
    target: Any,
    steps: int,
    baseline: str | torch.Tensor,
    random_order: bool,
    seed: int,
    batch_size: int,
) -> CurveResult:
    """The curve of one kind ("deletion" or "insertion"), shared by both functions."""
    model = unwrap_model(model)
    x = check_input(x, model, first_in_channels(model))
    n, _, h, w = x.shape
    steps = check_int(steps, "steps", 1, h * w)
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0)
    base = baseline_image(x, baseline)
    name = baseline if isinstance(baseline, str) else "tensor"
    if isinstance(saliency, str) or callable(saliency):
        _, fn = resolve_method(saliency)
        saliency = fn(model, x, _target(model, x, target))
    if random_order:
        sal, generator = None, torch.Generator().manual_seed(seed)
    elif saliency is None:
        raise InputError("saliency is None: pass a map, a method, or random_order=True")
    else:
        sal, generator = check_map(saliency, x), None
    ranks = pixel_ranks(sal, n, (h, w), generator).to(x.device)
    # pixels replaced at step k: the first k * P // steps of the order (none at 0, all at S)
    counts = torch.arange(steps + 1, device=x.device) * (h * w) // steps
    fractions = counts.double().cpu().numpy() / (h * w)
    logits = []
    with eval_mode(model), torch.no_grad():
        for i in range(n):
            moved = ranks[i].view(1, 1, h, w) < counts.view(-1, 1, 1, 1)  # (S+1, 1, H, W)
            hidden = moved if kind == "deletion" else ~moved
            # steps + 1 images: x with its hidden pixels (all channels) taken from the baseline
            images = torch.where(hidden, base[i : i + 1], x[i : i + 1])
            out = [_forward(model, chunk) for chunk in images.split(batch_size)]
            logits.append(torch.cat(out))
    all_logits = torch.stack(logits)  # (N, S+1, classes)
    # the unperturbed image: step 0 of a deletion, the last step of an insertion
    clean = all_logits[:, 0 if kind == "deletion" else -1]
    tgt = resolve_target(target, clean)
    idx = tgt.view(n, 1, 1).expand(n, steps + 1, 1)
    probs = all_logits.double().softmax(-1).gather(2, idx).squeeze(2).cpu().numpy()
    tl = all_logits.double().gather(2, idx).squeeze(2).cpu().numpy()
    auc = np.trapezoid(probs, fractions, axis=1)
    order = "random" if random_order else "saliency"
    return CurveResult(kind, fractions, probs, tl, auc, tgt.cpu().numpy(), name, order)


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's (N, classes) logits, checked."""
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ModelError("the model must return logits shaped (N, classes)")
    return out


def _target(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """The target classes: ``target`` (checked against the logits), or the model's
    prediction on ``x``."""
    with eval_mode(model), torch.no_grad():
        logits = _forward(model, x)
    return resolve_target(target, logits)


def deletion(
    model: nn.Module,
    x: torch.Tensor,
    saliency: Any = None,
    target: Any = None,
    steps: int = 20,
    baseline: str | torch.Tensor = "blur",
    random_order: bool = False,
    seed: int = 0,
    batch_size: int = 32,
) -> CurveResult:
    """Target probability as the most relevant pixels are replaced by the baseline (MoRF):
    a faithful map makes it fall fast (low AUC).

    ``saliency``: (N, C, H, W), (N, 1, H, W) or (N, H, W) map, or a method (name or
    ``f(model, x, target)``) to compute it; ``target`` None: the model's prediction;
    ``baseline``: "blur", "mean", "zero" or a tensor; ``random_order=True``: a seeded
    random order instead (the chance level).
    """
    return curve(
        "deletion", model, x, saliency, target, steps, baseline, random_order, seed, batch_size
    )


def insertion(
    model: nn.Module,
    x: torch.Tensor,
    saliency: Any = None,
    target: Any = None,
    steps: int = 20,
    baseline: str | torch.Tensor = "blur",
    random_order: bool = False,
    seed: int = 0,
    batch_size: int = 32,
) -> CurveResult:
    """Target probability as the most relevant pixels are put back into the baseline
    image: a faithful map makes it rise fast (high AUC). Arguments as :func:`deletion`."""
    return curve(
        "insertion", model, x, saliency, target, steps, baseline, random_order, seed, batch_size
    )


def random_baseline(
    model: nn.Module,
    x: torch.Tensor,
    kind: str = "deletion",
    target: Any = None,
    steps: int = 20,
    baseline: str | torch.Tensor = "blur",
    seed: int = 0,
    batch_size: int = 32,
) -> CurveResult:
    """The chance level: the ``kind`` curve for a seeded random pixel order."""
    if kind not in ("deletion", "insertion"):
        raise OptionError(f"unknown kind {kind!r}; choose 'deletion' or 'insertion'")
    return curve(kind, model, x, None, target, steps, baseline, True, seed, batch_size)
