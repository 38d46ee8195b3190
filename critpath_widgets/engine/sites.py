"""Sites (calls of activation modules) and the hooks that read or rewrite their outputs.

A *site* is one call of an activation module during the forward pass; a module called
three times per forward (torchvision's Bottleneck ``relu``) gives three sites, in call
order. Hooks are owned by :class:`SiteHooks`, a context manager that removes them on
every path, so the user's model never keeps a hook after a call, even one that raised.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputTypeError, ModelError

#: Activation module types recorded by default.
DEFAULT_SITE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.PReLU,
)

SiteSpec = (
    None
    | type[nn.Module]
    | str
    | Callable[[str, nn.Module], bool]
    | Sequence[type[nn.Module] | str]
)


def _activation_types_in(model: nn.Module) -> list[str]:
    """Names of the activation-like module types present in ``model`` (for error messages)."""
    act_mod = nn.modules.activation
    found = {
        type(m).__name__
        for m in model.modules()
        if type(m).__module__ == act_mod.__name__
        or "activation" in type(m).__module__
        or any(
            k in type(m).__name__.lower()
            for k in (
                "relu",
                "swish",
                "gelu",
                "silu",
                "sigmoid",
                "tanh",
                "elu",
                "mish",
                "hardswish",
            )
        )
    }
    return sorted(found)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The eager module inside ``torch.compile``, ``DataParallel`` and
    ``DistributedDataParallel`` wrappers: hooks and the folded twin need the modules that
    run, and the wrappers forward to it with the same result."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            vars(model).get("_modules", {}).get("_orig_mod"), nn.Module
        ):
            model = model._modules["_orig_mod"]
        else:
            return model


def resolve_site_modules(model: nn.Module, sites: SiteSpec = None) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` pairs of the modules whose calls are sites.

    ``sites`` may be None (the default activation types), a module type, a tuple/list of
    module types and/or module names, a single module name, or a predicate
    ``f(name, module) -> bool``.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_modules())
    if sites is None:
        chosen = [(n, m) for n, m in named if isinstance(m, DEFAULT_SITE_TYPES)]
        what = "activation modules of types " + ", ".join(t.__name__ for t in DEFAULT_SITE_TYPES)
    elif isinstance(sites, type) and issubclass(sites, nn.Module):
        chosen = [(n, m) for n, m in named if isinstance(m, sites)]
        what = f"modules of type {sites.__name__}"
    elif isinstance(sites, str):
        return resolve_site_modules(model, [sites])
    elif callable(sites) and not isinstance(sites, (list, tuple)):
        chosen = [(n, m) for n, m in named if n and sites(n, m)]
        what = "modules accepted by the predicate"
    elif isinstance(sites, (list, tuple, set)):
        types = tuple(s for s in sites if isinstance(s, type) and issubclass(s, nn.Module))
        names = [s for s in sites if isinstance(s, str)]
        bad = [s for s in sites if not (isinstance(s, str) or s in types)]
        if bad:
            raise InputTypeError(
                f"sites entries must be module types or module names, got {bad[0]!r}"
            )
        by_name = dict(named)
        missing = [s for s in names if s not in by_name]
        if missing:
            raise ModelError(f"sites names not found in the model: {', '.join(missing)}")
        chosen = [(n, m) for n, m in named if (types and isinstance(m, types)) or n in names]
        what = "the requested modules"
    else:
        raise InputTypeError(
            "sites must be None, a module type, a list of module types or names, or a "
            f"predicate(name, module); got {type(sites).__name__}"
        )
    # A module registered under two names is one module: keep its first name.
    seen: set[int] = set()
    unique = []
    for n, m in chosen:
        if id(m) not in seen:
            seen.add(id(m))
            unique.append((n, m))
    if not unique:
        acts = _activation_types_in(model)
        found = ", ".join(acts) if acts else "none"
        raise ModelError(
            f"the model has no recordable sites: no {what}. Activation types found in it: "
            f"{found}. Pass sites=... to choose the modules to record."
        )
    return unique


class HookOwner(contextlib.AbstractContextManager):
    """Owns hook handles: registered on ``with`` entry, removed on every exit path."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def _register(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self._register()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    @property
    def hook_ids(self) -> set[int]:
        """Ids of the hooks this owner has registered (keys in the modules' hook dicts)."""
        return {h.id for h in self._handles}

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class SiteHooks(HookOwner):
    """Forward hooks (and pre-hooks) on the site modules, active only inside ``with``.

    Each hook call gets a running site index (call order). What happens at a site is
    decided by ``handler(index, name, output) -> replacement or None``, set per pass
    with :meth:`pass_with`, and optionally before the call by ``pre(index, module,
    args)``. Calls from other threads pass through untouched, so a user running the
    model elsewhere meanwhile is not affected.
    """

    def __init__(self, modules: Sequence[tuple[str, nn.Module]]):
        super().__init__()
        self._modules = list(modules)
        self._thread = threading.get_ident()
        self._handler: Callable[[int, str, torch.Tensor], torch.Tensor | None] | None = None
        self._pre: Callable[[int, nn.Module, tuple], None] | None = None
        self._count = 0
        self._calls: dict[int, int] = {}
        self.names: list[str] = []
        #: site calls in this thread outside any pass (activation checkpointing runs the
        #: forward again inside the backward)
        self.stray = 0
        #: ids of this owner's hooks, as keys of the modules' hook dictionaries
        self.ids: set[int] = set()
        #: the positional inputs of the site call being handled (empty outside a handler)
        self.inputs: tuple = ()

    def _register(self) -> None:
        self._thread = threading.get_ident()
        for name, module in self._modules:
            self._handles.append(module.register_forward_pre_hook(self._make_pre_hook()))
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        self.ids = self.hook_ids

    def _make_pre_hook(self) -> Callable[..., Any]:
        def pre(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() != self._thread:
                return
            if self._handler is None:  # outside a pass: say, recomputed inside a backward
                self.stray += 1  # (counted here: a recomputation may stop inside the call)
            elif self._pre is not None:
                # the index this call will get when it completes: a site module is a leaf
                # in practice, so no other site completes in between (users check the module)
                self._pre(self._count, module, args)

        return pre

    def _make_hook(self, name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if self._handler is None or threading.get_ident() != self._thread:
                return None
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"site {name!r} returned {type(output).__name__}, not a tensor")
            i = self._count
            self._count += 1
            k = self._calls.get(id(module), 0)
            self._calls[id(module)] = k + 1
            if i == len(self.names):
                self.names.append(name if k == 0 else f"{name}#{k + 1}")
            self.inputs = inputs
            try:
                return self._handler(i, name, output)
            finally:
                self.inputs = ()

        return hook

    @property
    def count(self) -> int:
        """Site calls so far in the current pass."""
        return self._count

    @contextlib.contextmanager
    def pass_with(
        self,
        handler: Callable[[int, str, torch.Tensor], torch.Tensor | None],
        pre: Callable[[int, nn.Module, tuple], None] | None = None,
    ) -> Iterator[Callable[[], int]]:
        """Route every site call of one forward pass to ``handler`` (and ``pre`` before
        the call, with the site's module and positional inputs); yields a site counter."""
        self._handler, self._pre = handler, pre
        self._count = 0
        self._calls = {}
        try:
            yield lambda: self._count
        finally:
            self._handler = self._pre = None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards.

    A model already in eval mode is left untouched: setting every module's flag goes
    through ``Module.__setattr__`` for each of them, a cost paid on every explanation
    otherwise.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        if any(flag for _, flag in flags):
            model.eval()
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def first_in_channels(model: nn.Module) -> int | None:
    """in_channels of the first convolution in registration order, if any."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None
