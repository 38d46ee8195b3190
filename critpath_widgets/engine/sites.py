"""Sites (calls of activations) and the hooks that read or rewrite their outputs.

A *site* is one call of an activation module, or of an activation function inside
``forward`` (:mod:`.functional`), during the forward pass; a module called three times
per forward (torchvision's Bottleneck ``relu``) gives three sites, in call order. Which
calls are sites is resolved by :mod:`.site_spec`. Hooks are owned by :class:`SiteHooks`,
a context manager that removes them on every path, so the user's model never keeps a
hook after a call, even one that raised.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .functional import (
    PIECEWISE_LINEAR_KINDS,
    FunctionalSites,
    functional_name,
    is_activation,
    is_piecewise_linear_module,
)


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
    """Forward hooks (and pre-hooks) on the site modules, and the calls of the chosen
    activation functions, routed to a handler only inside ``with``.

    Each site call gets a running site index (call order). What happens at a site is
    decided by ``handler(index, name, output) -> replacement or None``, set per pass
    with :meth:`pass_with`, and, for module sites, optionally before the call by
    ``pre(index, module, args)``. Calls from other threads pass through untouched, so a
    user running the model elsewhere meanwhile is not affected.

    With ``functions`` (kinds of :mod:`.functional`), the pass also runs under a
    :class:`~.functional.FunctionalSites` mode, and hooks on every module of ``net``
    keep the path of the module calls in progress (a functional site is named after
    the module that called it) and whether an activation or site module is running
    (the functions such a module calls are its own, not sites).
    """

    def __init__(
        self,
        modules: Sequence[tuple[str, nn.Module]],
        functions: frozenset[str] = frozenset(),
        net: nn.Module | None = None,
    ):
        super().__init__()
        self._modules = list(modules)
        self._net = net
        self._thread = threading.get_ident()
        self._handler: Callable[[int, str, torch.Tensor], torch.Tensor | None] | None = None
        self._pre: Callable[[int, nn.Module, tuple], None] | None = None
        self._count = 0
        self._calls: dict[object, int] = {}
        self.names: list[str] = []
        #: per site, in call order: (what it is: a module type or "F.kind", whether it is
        #: piecewise linear)
        self.kinds: list[tuple[str, bool]] = []
        #: site calls in this thread outside any pass (activation checkpointing runs the
        #: forward again inside the backward)
        self.stray = 0
        #: ids of this owner's hooks, as keys of the modules' hook dictionaries
        self.ids: set[int] = set()
        #: ids of the hooks that only keep the module path (they never see a tensor)
        self.path_ids: set[int] = set()
        #: the positional inputs of the site call being handled (empty outside a handler)
        self.inputs: tuple = ()
        self._mode = (
            FunctionalSites(functions, self._functional_site, lambda: self._inside > 0)
            if functions and net is not None
            else None
        )
        #: whether the passes record the functions' calls (the caller turns it off once
        #: a pass found none: then a pass costs what it did without them)
        self.record_functions = self._mode is not None
        #: functional site calls in the current pass
        self.functional = 0
        self._stack: list[str] = []  # module paths of the calls in progress
        self._inside = 0  # activation or site module calls in progress

    def _register(self) -> None:
        self._thread = threading.get_ident()
        for name, module in self._modules:
            self._handles.append(module.register_forward_pre_hook(self._make_pre_hook()))
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        first = len(self._handles)
        if self._mode is not None and self._net is not None:
            own = {id(m) for _, m in self._modules}
            for path, m in self._net.named_modules():
                leaf = id(m) in own or is_activation(m)
                self._handles.append(m.register_forward_pre_hook(self._enter(path, leaf)))
                self._handles.append(m.register_forward_hook(self._leave(leaf), always_call=True))
        self.ids = self.hook_ids
        self.path_ids = {h.id for h in self._handles[first:]}

    def _enter(self, path: str, leaf: bool) -> Callable[..., None]:
        def pre(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() == self._thread:
                self._stack.append(path)
                self._inside += leaf

        return pre

    def _leave(self, leaf: bool) -> Callable[..., None]:
        def post(module: nn.Module, args: tuple, output: Any) -> None:
            if threading.get_ident() == self._thread and self._stack:
                self._stack.pop()
                self._inside -= leaf

        return post

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
            kind = (type(module).__name__, is_piecewise_linear_module(module))
            return self._site(name, id(module), kind, output, inputs)

        return hook

    def _functional_site(self, kind: str, output: torch.Tensor, args: tuple) -> torch.Tensor:
        """A call of an activation function inside a pass: a site named after the module
        that called it; returns its output, replaced or not."""
        if self._handler is None:
            return output
        self.functional += 1
        path = self._stack[-1] if self._stack else ""
        label = (f"F.{kind}", kind in PIECEWISE_LINEAR_KINDS)
        out = self._site(functional_name(path, kind), (path, kind), label, output, args)
        return output if out is None else out

    def _site(
        self, name: str, key: object, kind: tuple[str, bool], output: torch.Tensor, inputs: Any
    ) -> torch.Tensor | None:
        """The handler's answer for the next site call (``key``: what counts repeated
        calls of one module or of one function in one module)."""
        assert self._handler is not None
        i = self._count
        self._count += 1
        k = self._calls.get(key, 0)
        self._calls[key] = k + 1
        if i == len(self.names):
            self.names.append(name if k == 0 else f"{name}#{k + 1}")
            self.kinds.append(kind)
        self.inputs = inputs
        try:
            return self._handler(i, name, output)
        finally:
            self.inputs = ()

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
        a module site's call, with its module and positional inputs); yields a site
        counter."""
        self._handler, self._pre = handler, pre
        self._count = self.functional = self._inside = 0
        self._calls = {}
        self._stack.clear()
        mode = self._mode if self.record_functions else None
        try:
            with mode if mode is not None else contextlib.nullcontext():
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
