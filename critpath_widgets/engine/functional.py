"""Activation functions called inside ``forward`` (``F.relu(x)``, ``x.relu_()``), as sites.

torchvision's GoogLeNet and Inception v3 (``BasicConv2d``), DenseNet's last ReLU and many
users' own models apply activations as functions, not modules, so module hooks never see
them. :class:`FunctionalSites` is a :class:`~torch.overrides.TorchFunctionMode`: while a
pass runs, every call of a function in :data:`FUNCTION_KINDS` reaches it, is computed,
and is handed to the site hooks like a module site's output. Calls made by an activation
module's own ``forward`` (``nn.ReLU`` calls ``F.relu``) are left to the module hooks.

An in-place call (``F.relu(x, inplace=True)``, ``x.relu_()``) is computed out of place,
so that the site's output is a tensor of its own, and the result (masked or not) is then
copied into ``x``, which is returned: callers that use the return value and callers that
rely on ``x`` having changed both see the site's output, with its gradient.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: Activation functions recorded as sites, by kind (the name sites are labelled with).
FUNCTIONS_BY_KIND: dict[str, tuple[Callable[..., Any], ...]] = {
    "relu": (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_),
    "relu6": (F.relu6,),
    "hardtanh": (F.hardtanh, F.hardtanh_),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_),
    "prelu": (F.prelu,),
    "gelu": (F.gelu,),
    "silu": (F.silu,),
    "hardswish": (F.hardswish,),
    "mish": (F.mish,),
    "elu": (F.elu, F.elu_),
    "selu": (F.selu,),
    "celu": (F.celu,),
}
FUNCTION_KINDS: dict[Callable[..., Any], str] = {
    f: kind for kind, fs in FUNCTIONS_BY_KIND.items() for f in fs
}
#: Function kinds that are piecewise linear (the paper's local-linearity result holds).
PIECEWISE_LINEAR_KINDS = frozenset({"relu", "relu6", "hardtanh", "leaky_relu", "prelu"})

#: In-place builtins and the out-of-place function computing the same values.
_OUT_OF_PLACE: dict[Callable[..., Any], Callable[..., Any]] = {
    torch.relu_: torch.relu,
    torch.Tensor.relu_: torch.relu,
    F.hardtanh_: F.hardtanh,
    F.leaky_relu_: F.leaky_relu,
    F.elu_: F.elu,
}


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """The function's signature when it has an ``inplace`` parameter, else None."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    return sig if "inplace" in sig.parameters else None


_SIGNATURES = {f: _signature(f) for f in FUNCTION_KINDS}


def call_out_of_place(
    func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``func(*args, **kwargs)`` computed out of place, and the tensor an in-place call
    would have written into (None for an out-of-place call)."""
    if func in _OUT_OF_PLACE:
        return _OUT_OF_PLACE[func](*args, **kwargs), args[0]
    sig = _SIGNATURES.get(func)
    if sig is not None:
        bound = sig.bind(*args, **kwargs)
        if bound.arguments.get("inplace", False):
            bound.arguments["inplace"] = False
            return func(*bound.args, **bound.kwargs), bound.arguments["input"]
    return func(*args, **kwargs), None


class FunctionalSites(TorchFunctionMode):
    """Routes calls of the chosen activation functions to ``site(kind, out, args)``
    (which returns the site's output, replaced or not), in the thread that entered it,
    except while ``skip()`` says the call is an activation module's own."""

    def __init__(
        self,
        kinds: frozenset[str],
        site: Callable[[str, torch.Tensor, tuple], torch.Tensor],
        skip: Callable[[], bool],
    ) -> None:
        super().__init__()
        self._kinds = kinds
        self._site = site
        self._skip = skip
        self._thread = threading.get_ident()

    def __enter__(self) -> FunctionalSites:
        self._thread = threading.get_ident()
        return super().__enter__()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        """Every torch call in the pass comes here (this mode is off inside): most pass
        straight through; a chosen activation becomes a site."""
        kwargs = kwargs or {}
        try:
            kind = FUNCTION_KINDS.get(func)
        except TypeError:  # an unhashable callable: not one of ours
            kind = None
        if (
            kind is None
            or kind not in self._kinds
            or self._skip()
            or threading.get_ident() != self._thread
        ):
            return func(*args, **kwargs)
        out, target = call_out_of_place(func, args, kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        result = self._site(kind, out, args)
        if target is None:
            return result
        if result.shape != target.shape:
            # a batch of another size (NeuronIntGrad's alphas): the call's own effect on
            # its input, and the batch for a caller that goes on with the return value
            target.copy_(out)
            return result
        return target.copy_(result)


def functional_name(path: str, kind: str) -> str:
    """A functional site's name: where it was called (module path) and what."""
    return f"{path}:F.{kind}" if path else f"F.{kind}"


_ACTIVATION_WORDS = (
    "relu",
    "swish",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "elu",
    "mish",
    "hardswish",
    "softplus",
    "activation",
)


def is_activation(m: nn.Module) -> bool:
    """Whether ``m`` looks like an activation module (torch's own, or a class named so)."""
    kind = type(m)
    if kind.__module__ == nn.modules.activation.__name__:
        return kind is not nn.MultiheadAttention
    name = kind.__name__.lower()
    return "activation" in kind.__module__ or any(w in name for w in _ACTIVATION_WORDS)


def is_piecewise_linear_module(m: nn.Module) -> bool:
    """Whether a site module computes a piecewise-linear function in eval mode."""
    return isinstance(m, PIECEWISE_LINEAR_TYPES)


#: Module types that are piecewise linear in eval mode (RReLU's slope is fixed then).
PIECEWISE_LINEAR_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.PReLU,
    nn.RReLU,
    nn.Threshold,
    nn.Identity,
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
)
