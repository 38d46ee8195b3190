"""DGR / CDRP (Wang et al., CVPR 2018): learned gates, the pruning objective.

The paper's main foil. Every neuron of every site gets a gate (per sample, shaped like
the site output, initialised at ``init``); the gated network (each site's output times
its gate) is trained to keep the explained answer: the loss is the cross-entropy of the
gated logits against the target class (summed over the samples) plus ``l1`` times the
sum of the gates. SGD with momentum 0.9, as the authors, takes ``steps`` steps of size
``lr`` and clamps the gates at >= 0 after each; the scores are the final gates, so the
engine's selection keeps the gates above the global quantile (gates closed at 0 rank
below every open one, by the steps they stayed open: :func:`rank_scores`).

Defaults, chosen on the default model (efficientnet_lite0, 6.2M neurons): ``l1`` 3e-5 is
the scale of the cross-entropy's gradient per gate (median |a * dCE/da| there is 2.4e-5),
so that gates whose neuron helps the answer can resist it; ``lr`` 60 makes the l1 term
alone move a gate by about lr * l1 / (1 - momentum) = 0.018 a step, so a gate the answer
does not need reaches 0 around step 60. By step 100 (the authors took about 1000) over
99% of the gates are 0 and the 0.3% left keep the answer (a subnetwork DGR's way): a
pathway of lower sparsity holds those plus closed gates, the longest-open first.
A step costs about 1.4 plain gradients: 100 steps take about 7 s on two quiet CPU
cores (``benchmarks/bench_dgr.py``: 140x a plain gradient).

A neuron that is dead on the input (output 0) gets no gradient from the cross-entropy
until gating upstream wakes it: its gate only decays by the l1 term. Only the gates are
differentiated (``torch.autograd.grad``), so the model's parameters never get a ``.grad``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import InputError, ModelError
from .. import passes
from ..layout import SiteLayout
from ..passes import PassState
from ..validate import check_positive_int
from .base import Job, Scorer

#: the SGD momentum of the authors' optimiser
MOMENTUM = 0.9
#: restarts with a ten times smaller step when the loss stops being finite
RETRIES = 3


class DGR(Scorer):
    """Gates trained on cross-entropy to the target + ``l1`` * sum of gates (SGD with
    momentum)."""

    description = (
        "DGR pruning objective: per-neuron gates trained on cross-entropy to the answer "
        "+ l1 * sum of gates, `steps` SGD steps"
    )
    options = {"steps": 100, "l1": 3e-5, "init": 1.0, "lr": 60.0, "seed": 0}

    def __init__(self) -> None:
        #: the loss (summed over the samples) before each step of the last scoring
        self.losses: list[float] = []
        #: the final gates of the last scoring, flat (N, total)
        self.gates: torch.Tensor | None = None
        #: the step size the last scoring ran with (``lr``, or smaller after a divergence)
        self.lr_used: float | None = None

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """``steps`` a positive integer, ``l1`` >= 0, ``init`` and ``lr`` > 0, ``seed`` an
        integer."""
        check_positive_int(opts, "steps")
        for k, lowest, strict in (("l1", 0.0, False), ("init", 0.0, True), ("lr", 0.0, True)):
            v = opts[k]
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v < lowest or (strict and v == lowest):
                bound = "> 0" if strict else ">= 0"
                raise InputError(f"{k} must be a finite number {bound}, got {v!r}")
        if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int):
            raise InputError(f"seed must be an integer, got {opts['seed']!r}")

    def score(self, job: Job) -> torch.Tensor:
        """The gates after ``steps`` SGD steps, flat (N, total) in the score pass's
        layout (gates of one sample never see another sample's loss). A run whose loss
        stops being finite (a step too large for this model) starts again from ``init``
        with a step ten times smaller, at most :data:`RETRIES` times (:attr:`lr_used`)."""
        lr = float(job.opts["lr"])
        for _ in range(RETRIES + 1):
            scores = self._run(job, lr)
            if scores is not None:
                self.lr_used = lr
                return scores
            lr /= 10
        raise ModelError(
            f"DGR diverged on this model (loss not finite) down to lr={lr * 10:g}: pass a "
            "smaller lr or l1"
        )

    def _run(self, job: Job, lr: float) -> torch.Tensor | None:
        """One optimisation at step size ``lr``; None when the loss stops being finite."""
        st, x, first, opts = job.st, job.x, job.first, job.opts
        steps, l1 = int(opts["steps"]), float(opts["l1"])
        layout = first.layout
        gates = torch.full(
            (x.shape[0], layout.total), float(opts["init"]), dtype=x.dtype, device=x.device
        )
        gates.requires_grad_(True)
        opt = torch.optim.SGD([gates], lr=lr, momentum=MOMENTUM)
        self.losses = []
        opened = torch.zeros(gates.shape, dtype=torch.int32, device=x.device)
        with seeded(int(opts["seed"]), x.device):
            for step in range(1, steps + 1):
                loss, g = gated_loss_grad(st, x, first.target, gates, layout, l1)
                self.losses.append(float(loss))
                if not math.isfinite(self.losses[-1]):
                    return None
                gates.grad = g  # the optimizer reads it; the model's tensors get none
                opt.step()
                with torch.no_grad():
                    gates.clamp_(min=0)  # invariant: every gate >= 0 after each step
                    opened += gates > 0
                if job.progress is not None:
                    job.progress(step, steps)
        if not bool(torch.isfinite(gates).all()):
            return None
        self.gates = gates.detach()
        return rank_scores(self.gates, opened, steps)


def rank_scores(gates: torch.Tensor, opened: torch.Tensor, steps: int) -> torch.Tensor:
    """The scores the pathway is selected by: an open gate's value, above every closed
    gate of its sample; a closed gate (0) ranks by the steps it stayed open. By the
    default steps most gates are closed, and a pathway of ordinary sparsity holds many
    of them: ranked by how long the objective needed each neuron, not by position."""
    closed = gates == 0
    if not bool(closed.any()):
        return gates
    inf = torch.full_like(gates, math.inf)
    floor = torch.where(closed, inf, gates).amin(dim=1, keepdim=True)  # lowest open gate
    floor = torch.where(torch.isinf(floor), torch.ones_like(floor), floor)
    return torch.where(closed, floor * 0.5 * opened.to(gates.dtype) / (steps + 1), gates)


def gated_loss_grad(
    st: PassState,
    x: torch.Tensor,
    target: torch.Tensor,
    gates: torch.Tensor,
    layout: SiteLayout,
    l1: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DGR loss of the gated network (cross-entropy to ``target`` summed over the
    samples, + ``l1`` * sum of the gates) and its gradient with respect to the flat
    (N, total) ``gates`` alone."""
    # invariant: each site's gates are a leaf view over the flat gates' memory, and each
    # site's gradient is added into one flat gradient (a gradient of the flat tensor
    # through its slices would allocate a full-size buffer per site)
    views = [v.requires_grad_(True) for v in layout.views(gates.detach())]

    def gate(i: int, name: str, out: torch.Tensor) -> torch.Tensor:
        # mul saves its operands, never its result: a later in-place write into the
        # returned tensor leaves the backward exact
        return out * views[i]

    logits = passes.run(st, x.detach(), gate)
    ce = F.cross_entropy(logits, target, reduction="sum")
    grads = passes.grad(ce, views, allow_unused=True)  # None: a site off every path
    g = torch.full_like(gates, l1, requires_grad=False)  # d(l1 * sum of gates) / d gate
    for gv, gi in zip(layout.views(g), grads, strict=True):
        if gi is not None:
            gv.add_(gi)
    return ce.detach() + l1 * gates.detach().sum(), g


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global RNG of the CPU (and of ``device`` when it is a CUDA device) seeded
    with ``seed`` inside ``with``, the caller's state restored afterwards: a model that
    draws random numbers gives the same gates for the same seed."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
