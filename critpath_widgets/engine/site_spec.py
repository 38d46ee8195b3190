"""Which calls are sites: the ``sites=`` argument resolved against a model.

By default the sites are the calls of the activation modules of today's classifiers
(:data:`DEFAULT_SITE_TYPES`) and of the same activations called as functions inside
``forward`` (:mod:`.functional`). ``sites=`` may name module types, module names,
activation functions (``F.relu``) or a predicate over modules instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InputTypeError, ModelError, SiteWarning
from .functional import (
    FUNCTION_KINDS,
    FUNCTIONS_BY_KIND,
    is_activation,
    is_piecewise_linear_module,
)
from .validate import caller_level

#: Activation module types recorded by default: the ReLU family and the smooth
#: activations of today's classifiers (GELU, SiLU/Swish, Hardswish, Mish, ELU family).
#: Sigmoid-style gates (squeeze-and-excitation scales) are not activations of neurons
#: on the main path and are left out.
DEFAULT_SITE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.PReLU,
    nn.RReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
)
#: Activation functions recorded by default when called inside ``forward``.
DEFAULT_SITE_FUNCTIONS: frozenset[str] = frozenset(FUNCTIONS_BY_KIND)

SiteSpec = (
    None
    | type[nn.Module]
    | str
    | Callable[..., Any]
    | Sequence[type[nn.Module] | str | Callable[..., Any]]
)


def activation_types_in(model: nn.Module) -> list[str]:
    """Names of the activation-like module types present in ``model`` (for messages)."""
    return sorted({type(m).__name__ for m in model.modules() if is_activation(m)})


@dataclass(frozen=True)
class SiteChoice:
    """The resolved ``sites=``: site modules, and activation kinds recorded as calls."""

    #: (name, module) of the site modules, each module once
    modules: list[tuple[str, nn.Module]]
    #: kinds of activation functions (:data:`.functional.FUNCTIONS_BY_KIND`) whose calls
    #: inside ``forward`` are sites
    functions: frozenset[str]
    #: what was asked for, in words (for the message when nothing is found)
    what: str

    def no_sites_message(self, model: nn.Module) -> str:
        """Why a model has no sites, naming the activation types it does have."""
        acts = activation_types_in(model)
        return (
            f"the model has no recordable sites: no {self.what}. Activation types found "
            f"in it: {', '.join(acts) if acts else 'none'}. Pass sites=... to choose the "
            "modules (types or names) or activation functions (say F.relu) to record."
        )


def resolve_sites(model: nn.Module, sites: SiteSpec = None) -> SiteChoice:
    """Resolve ``sites``: None (the default activation types and functions), a module
    type, a module name, an activation function such as ``F.relu``, a list of these, or
    a predicate ``f(name, module) -> bool`` over modules. A choice that includes modules
    that are not activations is accepted with a :class:`SiteWarning`."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_modules())
    functions: frozenset[str] = frozenset()
    if sites is None:
        chosen = [(n, m) for n, m in named if isinstance(m, DEFAULT_SITE_TYPES)]
        functions = DEFAULT_SITE_FUNCTIONS
        what = (
            "activation modules (types "
            + ", ".join(t.__name__ for t in DEFAULT_SITE_TYPES)
            + ") and no activation functions called in forward ("
            + ", ".join(f"F.{k}" for k in sorted(functions))
            + ")"
        )
    elif _is_function(sites):
        return resolve_sites(model, [sites])
    elif isinstance(sites, type) and issubclass(sites, nn.Module):
        chosen = [(n, m) for n, m in named if isinstance(m, sites)]
        what = f"modules of type {sites.__name__}"
    elif isinstance(sites, str):
        return resolve_sites(model, [sites])
    elif callable(sites) and not isinstance(sites, (list, tuple)):
        chosen = [(n, m) for n, m in named if n and sites(n, m)]
        what = "modules accepted by the predicate"
    elif isinstance(sites, (list, tuple, set)):
        chosen, functions, what = _from_list(named, list(sites))
    else:
        raise InputTypeError(
            "sites must be None, a module type, an activation function (say F.relu), a "
            "list of module types, names or functions, or a predicate(name, module); got "
            f"{type(sites).__name__}"
        )
    # A module registered under two names is one module: keep its first name.
    seen: set[int] = set()
    unique = []
    for n, m in chosen:
        if id(m) not in seen:
            seen.add(id(m))
            unique.append((n, m))
    choice = SiteChoice(unique, functions, what)
    if not unique and not functions:
        raise ModelError(choice.no_sites_message(model))
    _warn_not_activations(unique)
    return choice


def _is_function(s: Any) -> bool:
    """Whether ``s`` is one of the recordable activation functions."""
    try:
        return s in FUNCTION_KINDS
    except TypeError:  # unhashable
        return False


def _from_list(
    named: list[tuple[str, nn.Module]], sites: list[Any]
) -> tuple[list[tuple[str, nn.Module]], frozenset[str], str]:
    """Modules and function kinds chosen by a list of types, names and functions."""
    types = tuple(s for s in sites if isinstance(s, type) and issubclass(s, nn.Module))
    names = [s for s in sites if isinstance(s, str)]
    functions = frozenset(FUNCTION_KINDS[s] for s in sites if _is_function(s))
    bad = [s for s in sites if not (isinstance(s, str) or s in types or _is_function(s))]
    if bad:
        raise InputTypeError(
            "sites entries must be module types, module names or activation functions "
            f"(F.relu, F.gelu, ...), got {bad[0]!r}"
        )
    by_name = dict(named)
    missing = [s for s in names if s not in by_name]
    if missing:
        raise ModelError(f"sites names not found in the model: {', '.join(missing)}")
    chosen = [(n, m) for n, m in named if (types and isinstance(m, types)) or n in names]
    what = "the requested modules" + (
        " or calls of " + ", ".join(f"F.{k}" for k in sorted(functions)) if functions else ""
    )
    return chosen, functions, what


def _warn_not_activations(modules: list[tuple[str, nn.Module]]) -> None:
    """A notice when chosen site modules are not activations: their outputs are masked
    as neurons, which is not the paper's pathway."""
    odd = [(n, m) for n, m in modules if not is_activation(m)]
    if not odd:
        return
    kinds = sorted({type(m).__name__ for _, m in odd})
    example = ", ".join(n for n, _ in odd[:3]) + (", ..." if len(odd) > 3 else "")
    linear = all(is_piecewise_linear_module(m) for _, m in odd)
    warnings.warn(
        f"{len(odd)} of the {len(modules)} site modules are not activations ("
        f"{', '.join(kinds)}: {example}). Their outputs are masked as if they were neurons: "
        "the critical pathway of the paper is defined over activations"
        + ("" if linear else ", and these are not known to be piecewise linear")
        + ".",
        SiteWarning,
        stacklevel=caller_level(),
    )
