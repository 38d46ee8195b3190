"""Cascading model-parameter randomisation (Adebayo et al. 2018), the paper's sanity
check: randomise a copy's layers from the logits down, one at a time and cumulatively,
and measure how similar each method's map stays to its original. A map that explains
the model must change once the model does; one that stays alike ignores the model.

Maps are reduced to 2-D per pixel by the channel value of largest magnitude, sign kept
(the package's convention): "spearman" ranks the signed maps, "spearman_abs" their
magnitudes, "ssim" and "hog" compare the magnitudes scaled to [0, 1] (see
:mod:`.similarity`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.sites import eval_mode, first_in_channels, unwrap_model
from ..engine.validate import check_input, progress_fn, resolve_target
from ..errors import InputError, ModelError
from ._common import Result, check_int, reduce_map, resolve_methods
from .similarity import METRICS, check_metrics

#: the standard deviation of the normal re-initialisation of a module without
#: ``reset_parameters`` (the authors' N(0, 0.1))
NORMAL_STD = 0.1


@dataclass
class SanityResult(Result):
    """Similarity of each method's map to its original after each randomisation step."""

    #: "(none)" for step 0, then the module randomised at each step (from the logits down)
    steps: list[str]
    #: the attribution methods compared
    methods: list[str]
    #: the similarity metrics (names in :data:`~critpath_widgets.evaluation.METRICS`)
    metrics: list[str]
    #: method -> metric -> (steps,) mean over the images (1.0 at step 0)
    similarity: dict[str, dict[str, np.ndarray]]
    #: method -> metric -> (steps, N)
    per_image: dict[str, dict[str, np.ndarray]]
    #: the explained class per image, (N,)
    target: np.ndarray
    #: method -> (steps, N, H, W) 2-D maps, with ``keep_maps=True``
    maps: dict[str, np.ndarray] | None = None

    def plot(self, ax: Any = None, metric: str | None = None) -> Any:
        """One panel per metric (lines: methods) or, given ``ax``, ``metric`` (default the
        first) on it; returns the figure or the axes."""
        if ax is not None:
            self._panel(ax, metric or self.metrics[0])
            return ax
        import matplotlib.pyplot as plt

        names = [metric] if metric else self.metrics
        fig, axs = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
        for a, m in zip(axs[0], names, strict=True):
            self._panel(a, m)
        fig.suptitle("Cascading randomisation from the logits down")
        fig.tight_layout()
        return fig

    def _panel(self, ax: Any, metric: str) -> None:
        """``metric`` per step, one line per method."""
        for m in self.methods:
            ax.plot(self.similarity[m][metric], "o-", ms=3, label=m)
        ticks = np.arange(len(self.steps))
        every = max(1, len(ticks) // 20)  # at most ~20 names on the axis
        ax.set_xticks(ticks[::every], self.steps[::every], rotation=90, fontsize="x-small")
        ax.set_ylabel(metric)
        ax.set_xlabel("randomised down to")
        ax.axhline(0, color="gray", lw=0.5)
        ax.legend(fontsize="small")


def parameter_groups(model: nn.Module, x: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """The modules with parameters of their own, in the order of their first call in a
    forward pass on ``x`` (found with forward pre-hooks on ``model``, removed after), and
    the logits of that pass. Modules never called are left out."""
    own = [(n, m) for n, m in model.named_modules() if next(m.parameters(False), None) is not None]
    order: list[str] = []
    handles = []
    for name, m in own:

        def first_call(mod: nn.Module, args: Any, name: str = name) -> None:
            if name not in seen:
                seen.add(name)
                order.append(name)

        handles.append(m.register_forward_pre_hook(first_call))
    seen: set[str] = set()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ModelError("the model must return logits shaped (N, classes)")
    if not order:
        raise ModelError("the model has no parameterised module called in its forward pass")
    return order, logits


def randomise(module: nn.Module) -> None:
    """Re-initialise ``module``'s own parameters: its ``reset_parameters()`` (for a
    BatchNorm also its running statistics), else N(0, 0.1)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            p.normal_(0.0, NORMAL_STD)


def _cascade(order: list[str], layers: int | Sequence[str] | None) -> list[str]:
    """The modules randomised, in cascade order (from the logits down): all, the top
    ``layers``, or the named ones."""
    top_down = order[::-1]
    if layers is None:
        return top_down
    if isinstance(layers, int):
        return top_down[: check_int(layers, "layers", 1, len(top_down))]
    names = list(layers)
    bad = [n for n in names if n not in top_down]
    if bad or not names:
        raise InputError(f"layers {bad or names} are not parameterised modules the forward calls")
    return [n for n in top_down if n in set(names)]


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    methods: Any,
    target: Any = None,
    metrics: Sequence[str] = ("spearman", "spearman_abs", "ssim", "hog"),
    keep_maps: bool = False,
    seed: int = 0,
    progress: Any = None,
    layers: int | Sequence[str] | None = None,
) -> SanityResult:
    """Cascading randomisation on a deep copy of ``model`` (the model is never touched):
    step k has the top k parameterised modules re-initialised (seeded), and each method's
    map (names through ``critpath_widgets.attribute`` or callables ``f(model, x,
    target)``) is compared with its step-0 map by each metric. The target is fixed for
    all steps: ``target``, or the original model's prediction. ``layers`` stops the
    cascade early (an int: the top ``layers`` modules) or picks modules by name.
    """
    fns = resolve_methods(methods)
    names = check_metrics(metrics)
    seed = check_int(seed, "seed", 0)
    report = progress_fn(progress, "sanity check")
    model = unwrap_model(model)
    x = check_input(x, model, first_in_channels(model))
    try:
        twin = copy.deepcopy(model)
    except Exception as e:  # a model deepcopy cannot copy cannot be randomised safely
        raise ModelError(f"the model cannot be deep-copied, so it cannot be randomised: {e}") from e
    twin.eval()
    order, logits = parameter_groups(twin, x)
    tgt = resolve_target(target, logits)
    cascade = _cascade(order, layers)
    modules = dict(twin.named_modules())
    n, total = x.shape[0], len(cascade) + 1
    sims = {m: {k: np.ones((total, n)) for k in names} for m in fns}
    kept: dict[str, list[np.ndarray]] = {m: [] for m in fns}
    originals: dict[str, np.ndarray] = {}
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    try:
        # the user's global RNG state is left as it was; the re-initialisation is seeded
        with torch.random.fork_rng(devices=devices), eval_mode(twin):
            torch.manual_seed(seed)
            for step in range(total):
                if step:
                    randomise(modules[cascade[step - 1]])
                for m, fn in fns.items():
                    maps = _map2d(fn, twin, x, tgt, m)
                    if keep_maps:
                        kept[m].append(maps.astype(np.float32))
                    if step == 0:
                        originals[m] = maps
                        continue  # similarity 1.0: nothing randomised yet
                    for k in names:
                        for i in range(n):
                            sims[m][k][step, i] = METRICS[k](originals[m][i], maps[i])
                if report is not None:
                    report(step + 1, total)
    finally:
        if hasattr(report, "close"):
            report.close()
    return SanityResult(
        ["(none)", *cascade],
        list(fns),
        list(names),
        {m: {k: _mean(v) for k, v in d.items()} for m, d in sims.items()},
        sims,
        tgt.cpu().numpy(),
        {m: np.stack(v) for m, v in kept.items()} if keep_maps else None,
    )


def _mean(v: np.ndarray) -> np.ndarray:
    """(steps, N) -> (steps,): the mean over the images that have a value (NaN: none)."""
    ok = ~np.isnan(v)
    return np.where(ok, v, 0).sum(1) / np.where(ok.any(1), ok.sum(1), np.nan)


def _map2d(fn: Any, model: nn.Module, x: torch.Tensor, tgt: torch.Tensor, name: str) -> np.ndarray:
    """Method ``name``'s (N, H, W) float64 map on the randomised copy."""
    from ._common import as_map

    out = as_map(fn(model, x, tgt))
    if out.dim() not in (3, 4) or out.shape[0] != x.shape[0]:
        raise ModelError(
            f"method {name!r} returned a map shaped {tuple(out.shape)}; expected "
            f"({x.shape[0]}, C, H, W) or ({x.shape[0]}, H, W)"
        )
    return reduce_map(out.double()).cpu().numpy()
