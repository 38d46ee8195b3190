"""What the evaluation functions share: method resolution, 2-D maps, JSON-ready results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, InputTypeError

#: a map function: (model, x, target) -> (N, C, H, W) saliency
MapFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def as_map(out: Any) -> torch.Tensor:
    """A map function's result as a detached tensor (an object with ``.saliency`` too)."""
    if not isinstance(out, torch.Tensor):
        out = getattr(out, "saliency", out)
    if not isinstance(out, torch.Tensor):
        raise InputTypeError(f"a map function must return a torch.Tensor, got {type(out).__name__}")
    return out.detach()


def resolve_method(method: str | MapFn) -> tuple[str, MapFn]:
    """(name, map function) of a method given by name (:func:`critpath_widgets.attribute`'s
    methods; its explainer cache keeps one explainer per model across the calls) or as
    ``f(model, x, target)``."""
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    if not isinstance(method, str):
        raise InputTypeError(
            f"a method is a name or a callable f(model, x, target), got {type(method).__name__}"
        )
    from ..attribution import attribute

    def via_attribute(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return as_map(attribute(model, x, method, target=target))

    return method, via_attribute


def resolve_methods(methods: Any) -> dict[str, MapFn]:
    """Methods given as one name or callable, a sequence of them, or a name -> method
    mapping, as name -> map function (names unique)."""
    if isinstance(methods, Mapping):
        items = [(str(k), resolve_method(v)[1]) for k, v in methods.items()]
    else:
        if isinstance(methods, str) or callable(methods):
            methods = [methods]
        if not isinstance(methods, Sequence) or not methods:
            raise InputError("methods must be a method, or a non-empty list or dict of them")
        items = [resolve_method(m) for m in methods]
    out = dict(items)
    if len(out) != len(items):
        raise InputError(f"method names must be unique, got {[k for k, _ in items]}")
    return out


def reduce_map(saliency: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) map -> (N, H, W): per pixel the channel value of largest
    magnitude, sign kept (the package's convention, as in the paper), or its magnitude."""
    if saliency.dim() == 3:
        return saliency.abs() if absolute else saliency
    if absolute:
        return saliency.abs().amax(dim=1)
    idx = saliency.abs().argmax(dim=1, keepdim=True)
    return saliency.gather(1, idx).squeeze(1)


def check_map(saliency: Any, x: torch.Tensor) -> torch.Tensor:
    """``saliency`` as a float tensor shaped (N, H, W), (N, 1, H, W) or (N, C, H, W) like
    ``x``; anything else raises an InputError that says what was expected."""
    if isinstance(saliency, np.ndarray):
        saliency = torch.from_numpy(saliency)
    if not isinstance(saliency, torch.Tensor):
        raise InputTypeError(f"saliency must be a tensor, got {type(saliency).__name__}")
    n, c, h, w = x.shape
    ok = saliency.dim() == 3 and tuple(saliency.shape) == (n, h, w)
    ok |= saliency.dim() == 4 and tuple(saliency.shape) in ((n, 1, h, w), (n, c, h, w))
    if not ok:
        raise InputError(
            f"saliency must be shaped ({n}, {h}, {w}), ({n}, 1, {h}, {w}) or ({n}, {c}, {h}, "
            f"{w}) for x of shape {tuple(x.shape)}; got {tuple(saliency.shape)}"
        )
    saliency = saliency.detach().to(device=x.device, dtype=torch.float64)
    if not bool(torch.isfinite(saliency).all()):
        raise InputError("saliency contains NaN or infinite values")
    return saliency


def check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise InputError(f"{name} must be >= {low}{upper}, got {value}")
    return int(value)


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays, numbers and tensors turned into lists and floats
    (NaN -> None), so that ``json.dumps`` takes it."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return None if v != v or v in (float("inf"), float("-inf")) else v
    return value


class Result:
    """Base of the result dataclasses: ``to_dict`` gives every field JSON-ready."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, arrays as lists and NaN as None (``json.dumps`` takes it)."""
        assert dataclasses.is_dataclass(self)
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def axes(ax: Any = None) -> tuple[Any, Any]:
    """(figure, axes) to draw into: ``ax``'s, or a new figure's (matplotlib, lazily)."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    return fig, ax
