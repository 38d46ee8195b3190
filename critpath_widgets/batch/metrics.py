"""Adapter from the attribution and evaluation APIs to flat JSON fields of a record.

The only module of the batch package that knows those APIs; it imports them lazily, so
the batch machinery runs where they are missing (then the maps come from the engine
directly: ``gradient`` and the ``pathway_*`` methods, and the metric ``map`` only).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CritpathError, OptionError

#: pathway method of the attribution API -> engine method, where the API is missing
ENGINE_METHODS: dict[str, str] = {
    "pathway_mct": "neuron_mct",
    "pathway_intgrad": "neuron_intgrad",
    "pathway_greedy": "greedy",
    "pathway_random": "random",
    "pathway_dgr": "dgr",
}

#: metric -> the module it needs (None: computed here from the map)
METRIC_MODULES: dict[str, str | None] = {
    "map": None,
    "deletion": "critpath_widgets.evaluation",
    "insertion": "critpath_widgets.evaluation",
    "sanity": "critpath_widgets.evaluation",
    "pathway": "critpath_widgets.evaluation",
}


@functools.cache
def _module(name: str) -> Any | None:
    """The module ``name``, or None where it is not installed (looked up once)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _attribution() -> Any | None:
    """critpath_widgets.attribution where installed (it has ``attribute``), else None."""
    mod = _module("critpath_widgets.attribution")
    return mod if mod is not None and hasattr(mod, "attribute") else None


def available_methods() -> list[str]:
    """Methods a batch run can evaluate with the code installed."""
    attr = _attribution()
    if attr is not None:
        return list(attr.ATTRIBUTION_METHODS)
    from ..engine import METHODS

    return ["gradient", *(m for m, e in ENGINE_METHODS.items() if e in METHODS)]


def check(methods: Sequence[str], metrics: Sequence[str]) -> None:
    """Refuse unknown methods and metrics, and metrics whose module is not installed,
    before any image is touched."""
    from ..engine import METHODS

    known = available_methods()
    for m in methods:
        engine = _engine_method(m)
        if engine is not None and engine not in METHODS:
            raise OptionError(f"method {m!r} needs the engine's {engine!r}, which it lacks")
        if m not in known:
            raise OptionError(
                f"unknown or unavailable method {m!r}; choose from {', '.join(known)}"
            )
    for name in metrics:
        if name not in METRIC_MODULES:
            raise OptionError(f"unknown metric {name!r}; choose from {', '.join(METRIC_MODULES)}")
        mod = METRIC_MODULES[name]
        if mod is not None and _module(mod) is None:
            raise CritpathError(f"metric {name!r} needs {mod}, which this installation lacks")


def _engine_method(method: str) -> str | None:
    attr = _attribution()
    table = getattr(attr, "PATHWAY_METHODS", ENGINE_METHODS) if attr else ENGINE_METHODS
    return table.get(method)


def scalar(v: Any) -> Any:
    """A float for a number or a one-element tensor/array/list (batch of one); lists for
    longer ones; None for NaN (JSON has none); anything else unchanged."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().tolist()
    elif hasattr(v, "tolist") and not isinstance(v, str):
        v = v.tolist()
    if isinstance(v, list | tuple):
        return scalar(v[0]) if len(v) == 1 else [scalar(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def flatten(prefix: str, v: Any) -> dict[str, Any]:
    """Flat fields ``prefix_key`` of a number, an array, a dict or an object with
    ``to_dict()``."""
    if hasattr(v, "to_dict"):
        v = v.to_dict()
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        for k, x in v.items():
            out.update(flatten(f"{prefix}_{k}", x))
        return out
    return {prefix: scalar(v)}


@dataclass
class Pair:
    """One (image, method) of a run: what every metric may need, the map made once."""

    model: nn.Module
    explainer: Any
    x: torch.Tensor
    target: int
    method: str
    steps: int = 20
    _map: torch.Tensor | None = None
    _explanation: Any = field(default=None, repr=False)

    def explanation(self) -> Any:
        """The engine's Explanation of a pathway method (None for other methods)."""
        engine = _engine_method(self.method)
        if engine is None:
            return None
        if self._explanation is None:
            self._explanation = self.explainer.explain(self.x, self.target, method=engine)
        return self._explanation

    def saliency(self) -> torch.Tensor:
        """The method's (1, C, H, W) map: attribute() where installed, else the engine."""
        if self._map is None:
            attr = _attribution()
            if attr is not None:
                self._map = attr.attribute(self.model, self.x, self.method, target=self.target)
            elif self.method == "gradient":
                self._map = self.explainer.gradient(self.x, self.target)
            else:
                self._map = self.explanation().saliency
        return self._map


def _map(p: Pair) -> dict[str, Any]:
    """Concentration of the map: share of |map| mass in the top 10 % of pixels."""
    a = p.saliency().detach().abs().sum(dim=1).flatten().double()
    total = float(a.sum())
    k = max(1, a.numel() // 10)
    top = float(a.topk(k).values.sum())
    return {"map_top10_share": top / total if total > 0 else None}


def _deletion(p: Pair) -> dict[str, Any]:
    ev = importlib.import_module("critpath_widgets.evaluation")
    r = ev.deletion(p.model, p.x, p.saliency(), target=p.target, steps=p.steps)
    return {"deletion_auc": scalar(r.auc)}


def _insertion(p: Pair) -> dict[str, Any]:
    ev = importlib.import_module("critpath_widgets.evaluation")
    r = ev.insertion(p.model, p.x, p.saliency(), target=p.target, steps=p.steps)
    return {"insertion_auc": scalar(r.auc)}


def _sanity(p: Pair) -> dict[str, Any]:
    """Similarity of the map to the maps of randomised models, at the last (most
    randomised) stage: ``sanity_<similarity>_last``."""
    ev = importlib.import_module("critpath_widgets.evaluation")
    r = ev.sanity_check(p.model, p.x, [p.method], target=p.target)
    out: dict[str, Any] = {}
    for name, values in r.similarity[p.method].items():
        v = scalar(values)
        out[f"sanity_{name}_last"] = v[-1] if isinstance(v, list) and v else v
    return out


def _pathway(p: Pair) -> dict[str, Any]:
    """Dead-neuron share and retained logit of a pathway method's pathway (None for a
    method without a pathway)."""
    e = p.explanation()
    if e is None:
        return {"dead_share": None}
    ev = importlib.import_module("critpath_widgets.evaluation")
    out = flatten("dead_share", ev.dead_share(e))
    engine = _engine_method(p.method)
    out.update(flatten("retained", ev.retained(p.explainer, p.x, engine, [e.sparsity])))
    return out


METRICS: dict[str, Callable[[Pair], dict[str, Any]]] = {
    "map": _map,
    "deletion": _deletion,
    "insertion": _insertion,
    "sanity": _sanity,
    "pathway": _pathway,
}


def compute(p: Pair, metrics: Sequence[str]) -> dict[str, Any]:
    """Every field of ``metrics`` for one (image, method), in the metrics' order."""
    out: dict[str, Any] = {}
    for name in metrics:
        out.update(METRICS[name](p))
    return out


__all__ = ["METRICS", "Pair", "available_methods", "check", "compute", "flatten", "scalar"]
