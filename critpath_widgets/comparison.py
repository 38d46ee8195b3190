"""Methods side by side: one photo and target through several attribution methods.

:func:`compare_methods` computes, for the same input and target, each method's map
(H, W) through the same code as :func:`~critpath_widgets.attribution.attribute` and,
for each pathway method, the target logit of the restricted network (only the kept
pathway) next to the full network's, so that a pathway that keeps nothing of the
evidence (the random one) shows it in its numbers as well as in its map. Baselines have
no pathway: they carry the full network's logit and say so. :func:`comparison_figure`
draws the result with the report's map renderer.

Imports no widget library; the user's model is never modified (every computation goes
through :mod:`.attribution` and the engine, which restore it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .attribution import ATTRIBUTION_METHODS, PATHWAY_METHODS, attribute, explainer_for
from .engine import Explanation, PathwayExplainer, reduce_channels
from .engine.pathway import check_sparsity
from .errors import InputError, OptionError
from .methods import method_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

    from .report import MapStyle

#: What :func:`compare_methods` runs by default: the contribution pathways, the random
#: pathway (the sanity baseline) and the plain gradient; greedy is slow, ask for it.
DEFAULT_METHODS: tuple[str, ...] = ("pathway_mct", "pathway_intgrad", "pathway_random", "gradient")
#: engine method name -> its name in ``attribute`` (both spellings are accepted)
_ATTRIBUTION_NAME = {v: k for k, v in PATHWAY_METHODS.items()}


@dataclass(frozen=True)
class MethodResult:
    """One method's map of the compared input and the target logit it stands for."""

    #: the method's name in :data:`~critpath_widgets.attribution.ATTRIBUTION_METHODS`
    method: str
    #: the (H, W) float32 map, channels reduced as the comparison's ``reduce`` says
    map: np.ndarray = field(repr=False)
    #: target logit of the restricted network (pathway methods) or of the full network
    logit: float
    #: softmax probability of the target for the same network as :attr:`logit`
    probability: float
    #: whether the map comes from a pathway (then :attr:`logit` is the restricted one)
    pathway: bool
    #: seconds the method took (0 when a cached explanation served it)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """The method's display name ("NeuronMCT (Taylor)", "Gradient (baseline)")."""
        return display_name(self.method)


@dataclass(frozen=True)
class Comparison:
    """The methods' results for one input, target, sparsity and scope."""

    #: the explained class index
    target: int
    #: share of units the pathway methods removed
    sparsity: float
    #: the pathway methods' scope, "global" or "layer"
    scope: str
    #: the full network's target logit
    full_logit: float
    #: the full network's softmax probability of the target
    full_probability: float
    #: method -> result, in the order asked for
    results: dict[str, MethodResult]
    #: how each map's channels were reduced to (H, W) ("max_abs", "abs_sum", "x_input")
    reduce: str = "max_abs"

    def __getitem__(self, method: str) -> MethodResult:
        """The result of ``method`` (either spelling of a pathway method)."""
        return self.results[canonical_method(method)]

    def setting_text(self, method: str) -> str:
        """What a method ran at: scope and sparsity, or "baseline, full network"."""
        if self[method].pathway:
            return f"{self.scope} scope, sparsity {self.sparsity:.2f}"
        return "baseline, full network"

    def logit_text(self, method: str) -> str:
        """The logit line of a panel: restricted next to full, or "full network"."""
        r = self[method]
        if r.pathway:
            return (
                f"target logit {r.logit:.2f} through the pathway, "
                f"{self.full_logit:.2f} full network"
            )
        return f"target logit {self.full_logit:.2f} (full network, no pathway)"

    def to_dict(self) -> dict[str, Any]:
        """The numbers (no maps), for JSON."""
        return {
            "target": self.target,
            "sparsity": self.sparsity,
            "scope": self.scope,
            "full_logit": self.full_logit,
            "full_probability": self.full_probability,
            "methods": {
                m: {
                    "name": r.name,
                    "pathway": r.pathway,
                    "logit": r.logit,
                    "probability": r.probability,
                    "seconds": r.seconds,
                }
                for m, r in self.results.items()
            },
        }


def canonical_method(method: str) -> str:
    """``method``'s name in ``attribute`` ("neuron_mct" -> "pathway_mct"); OptionError
    for a name that is neither an attribution method nor an engine method."""
    if isinstance(method, str):
        if method in ATTRIBUTION_METHODS:
            return method
        if method in _ATTRIBUTION_NAME:
            return _ATTRIBUTION_NAME[method]
    choices = ", ".join(ATTRIBUTION_METHODS)
    raise OptionError(f"unknown method {method!r} to compare; choose among {choices}")


def display_name(method: str) -> str:
    """The display name of an attribution method (a pathway method by its selection)."""
    return method_name(PATHWAY_METHODS.get(method, method))


def available_methods() -> tuple[str, ...]:
    """:data:`DEFAULT_METHODS` without the Captum baselines when Captum is missing."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return tuple(m for m in DEFAULT_METHODS if m in PATHWAY_METHODS)
    return DEFAULT_METHODS


def compare_methods(
    model_or_explainer: nn.Module | PathwayExplainer,
    x: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] | None = None,
    sparsity: float = 0.7,
    scope: str = "global",
    *,
    reduce: str = "max_abs",
    steps: int = 10,
    seed: int = 0,
    baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    explanations: Mapping[str, Explanation] | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[MethodResult], None] | None = None,
) -> Comparison:
    """Each method's map of ``x`` (one sample) for ``target`` and, for the pathway
    methods, the restricted network's target logit, so that methods compare at a glance.

    ``methods`` takes attribution names ("pathway_mct", "gradient", ...) or engine names
    ("neuron_mct"); None runs :func:`available_methods`. Pathway methods run at
    ``sparsity`` and ``scope`` (NeuronIntGrad with ``steps``, random with ``seed``);
    ``explanations`` (engine method -> Explanation of the same input and target, say an
    explorer's cache) are reused, re-thresholded by ``at_sparsity`` when their sparsity
    differs. ``baseline_options`` (baseline -> options) go to ``attribute``.
    ``progress(done, total)`` is called before each method and may raise to stop;
    ``on_result(result)`` after each one (a front end shows the maps as they come).
    """
    methods = list(available_methods() if methods is None else methods)
    if not methods:
        raise OptionError("compare_methods needs at least one method")
    names = [canonical_method(m) for m in methods]
    if len(set(names)) != len(names):
        raise OptionError(f"a method is named twice in {methods!r}")
    sparsity = check_sparsity(sparsity)
    if isinstance(model_or_explainer, PathwayExplainer):
        explainer = model_or_explainer
    elif isinstance(model_or_explainer, nn.Module):
        explainer = explainer_for(model_or_explainer)
    else:
        raise InputError(
            "compare_methods needs a torch.nn.Module or a PathwayExplainer, "
            f"not {type(model_or_explainer).__name__}"
        )
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"compare_methods explains one image, (C, H, W) or (1, C, H, W): {shape}")
    logits = explainer.predict(x)[0].detach()
    probs = torch.softmax(logits.double(), dim=0)
    target = _check_target(target, logits)
    options = {k: dict(v) for k, v in (baseline_options or {}).items()}
    reused = dict(explanations or {})
    results: dict[str, MethodResult] = {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names))
        t0 = time.perf_counter()
        if name in PATHWAY_METHODS:
            engine = PATHWAY_METHODS[name]
            # the engine's own progress (NeuronIntGrad's steps) checks for a stop too
            inner = None if progress is None else (lambda d, n, i=i: progress(i, len(names)))
            e = _explanation(
                explainer,
                x,
                target,
                engine,
                sparsity,
                scope,
                reused.get(engine),
                steps,
                seed,
                inner,
            )
            sal = e.saliency_map(reduce)[0]
            p_logits = e.pathway_logits[0].detach().double()
            logit = float(p_logits[target])
            prob = float(torch.softmax(p_logits, dim=0)[target])
        else:
            a = attribute(explainer.model, x, name, target, **options.get(name, {}))
            sal = reduce_channels(a.detach().float(), reduce, x.detach().float())[0]
            logit, prob = float(logits[target]), float(probs[target])
        results[name] = result = MethodResult(
            method=name,
            map=sal.detach().float().cpu().numpy().astype(np.float32, copy=False),
            logit=logit,
            probability=prob,
            pathway=name in PATHWAY_METHODS,
            seconds=time.perf_counter() - t0,
        )
        if on_result is not None:
            on_result(result)
    if progress is not None:
        progress(len(names), len(names))
    return Comparison(
        target=target,
        sparsity=float(sparsity),
        scope=scope,
        full_logit=float(logits[target]),
        full_probability=float(probs[target]),
        results=results,
        reduce=reduce,
    )


def _check_target(target: Any, logits: torch.Tensor) -> int:
    """The class to explain: the predicted one for None, else an index of the logits."""
    if target is None:
        return int(logits.argmax())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InputError(f"target must be a class index (int) or None, got {target!r}")
    n = int(logits.shape[0])
    if not 0 <= int(target) < n:
        raise InputError(f"target {target} is not a class index of this model (0..{n - 1})")
    return int(target)


def _explanation(
    explainer: PathwayExplainer,
    x: torch.Tensor,
    target: int,
    engine: str,
    sparsity: float,
    scope: str,
    cached: Explanation | None,
    steps: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Explanation:
    """The pathway of ``engine``: the cached explanation when it fits (same target and
    scope; re-thresholded at another sparsity), else a new one."""
    fits = (
        cached is not None
        and cached.method == engine
        and cached.scope == scope
        and int(cached.target[0]) == target
        and cached.inputs.shape == x.shape
    )
    if fits:
        if abs(float(cached.sparsity) - sparsity) < 1e-12:
            return cached
        return cached.at_sparsity(sparsity)
    opts: dict[str, Any] = {} if progress is None else {"progress": progress}
    if engine == "neuron_intgrad":
        opts["steps"] = steps
    if engine == "random":
        opts["seed"] = seed
    return explainer.explain(x, target, method=engine, sparsity=sparsity, scope=scope, **opts)


# --------------------------------------------------------------------------- figure
def panel_title(comparison: Comparison, method: str, target_name: str) -> str:
    """A panel's title: method, scope and sparsity (or "baseline"), target, logits."""
    r, how = comparison[method], comparison.setting_text(method)
    return f"{r.name}: {how}\ntarget {target_name!r}\n{comparison.logit_text(method)}"


def comparison_figure(
    image: Image.Image | np.ndarray | None,
    comparison: Comparison,
    categories: Sequence[str] | None = None,
    *,
    style: MapStyle | None = None,
    columns: int = 3,
    name: str | None = None,
) -> Figure:
    """The photo, then one panel per method drawn with the report's map renderer, each
    titled with method, scope, sparsity, target and the target logit it stands for
    (``name``, when given, is the target's name instead of ``categories``')."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image as PILImage

    from .report import MapStyle, draw_map, target_name

    style = MapStyle() if style is None else style
    if name is None:
        cats = list(categories) if categories is not None else None
        name = target_name(comparison.target, cats)
    photo = None
    if image is not None:
        photo = np.asarray(image.convert("RGB") if isinstance(image, PILImage.Image) else image)
    n = 1 + len(comparison.results)
    columns = max(1, min(int(columns), n))
    rows = -(-n // columns)
    fig = Figure(figsize=(4.2 * columns, 4.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    ax = axes[0]
    ax.set_axis_off()
    if photo is not None:
        ax.imshow(photo)
    ax.set_title(
        f"photo; target {name!r}\nfull network: logit {comparison.full_logit:.2f}, "
        f"p = {comparison.full_probability:.1%}",
        fontsize=9,
    )
    for ax, (method, r) in zip(axes[1:], comparison.results.items(), strict=False):
        draw_map(fig, ax, photo, r.map, panel_title(comparison, method, name), style)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig


__all__ = [
    "DEFAULT_METHODS",
    "Comparison",
    "MethodResult",
    "available_methods",
    "canonical_method",
    "compare_methods",
    "comparison_figure",
    "display_name",
    "panel_title",
]
