"""Prefix replay: skip the module calls that finish before a site, from cached outputs.

NeuronIntGrad pushes a batch of alpha-scaled copies of one site's output through the
rest of the network. Everything computed before that site is the same for every copy,
so it need not be recomputed at the batch size: :class:`PrefixReplay` records every
module call's output once (one plain forward pass), then, in a later pass, feeds each
outermost call that ends before the site an empty batch (so it computes nothing) and
returns the cached output, repeated for the rows of the pass. Works for any model
whose calls happen in a data-independent order; the caller verifies the result once
against the plain batched computation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .sites import HookOwner


def _empty_batch(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.dim() >= 1:
        return v[:0]
    return v


class PrefixReplay(HookOwner):
    """Hooks on every module (inside ``with``): record outputs, or replay a prefix."""

    def __init__(self, model: nn.Module, site_count: Any):
        super().__init__()
        self._modules = list({id(m): m for m in model.modules()}.values())
        self._site_count = site_count  # callable: site calls so far in this pass
        self._mode = "off"
        self._calls = 0
        self._stack: list[int] = []
        self._skip_depth = 0
        self._site = -1
        self._rows: torch.Tensor | None = None
        self.outputs: dict[int, torch.Tensor] = {}
        self.ends: dict[int, int] = {}
        self.recorded_calls = 0

    def _register(self) -> None:
        for m in self._modules:
            self._handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._post))

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.outputs.clear()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Cache each call's output and the number of site calls done when it ended."""
        self._start("record")
        try:
            yield
        finally:
            self.recorded_calls = self._calls
            self._mode = "off"

    @contextlib.contextmanager
    def replaying(self, site: int, rows: torch.Tensor) -> Iterator[None]:
        """Skip the outermost calls that end before ``site``; their outputs become the
        cached ones at the sample indices ``rows``."""
        self._start("replay")
        self._site = site
        self._rows = rows
        try:
            yield
            if self._calls != self.recorded_calls:
                raise ModelError("the model's module calls differ between passes")
        finally:
            self._mode = "off"
            self._rows = None

    def _start(self, mode: str) -> None:
        self._mode = mode
        self._calls = 0
        self._stack.clear()
        self._skip_depth = 0

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if self._mode == "off":
            return None
        idx = self._calls
        self._calls += 1
        self._stack.append(idx)
        if self._mode != "replay":
            return None
        if self._skip_depth:
            self._skip_depth += 1
            return None
        if idx in self.outputs and self.ends[idx] <= self._site:
            self._skip_depth = 1
            return (
                tuple(_empty_batch(a) for a in args),
                {k: _empty_batch(v) for k, v in kwargs.items()},
            )
        return None

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self._mode == "off" or not self._stack:
            return None
        idx = self._stack.pop()
        if self._mode == "record":
            if isinstance(output, torch.Tensor) and output.dim() >= 1:
                # a copy: later in-place ops (inplace ReLU, ``out += identity``) would
                # otherwise change what was recorded
                self.outputs[idx] = output.detach().clone()
                self.ends[idx] = self._site_count()
            return None
        if self._skip_depth:
            self._skip_depth -= 1
            if self._skip_depth == 0:
                assert self._rows is not None
                return self.outputs[idx].index_select(0, self._rows)
        return None
