"""Whether the explorer's model changed since its results were computed.

The explorer caches explanations, gradient maps, baseline maps and each picture's
predicted classes. A user who edits the model's weights (``load_state_dict``, an
optimiser step, ``.data`` writes) or swaps a submodule must never see a result of a
model state that no longer exists. :class:`ModelWatch` compares, before every request,
the model's modules (by identity) and its parameters and buffers (identity, and values
in full against copies taken when the results were made): exact, no version counters.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class ModelWatch:
    """Remembers the model's modules and tensors; :meth:`changed` says whether they
    differ now (and remembers the new state)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._take()

    def _take(self) -> None:
        """The state to compare with: modules and tensors by reference, values copied."""
        self._modules = list(self.model.named_modules())
        named = itertools.chain(self.model.named_parameters(), self.model.named_buffers())
        self._tensors = [(n, t, t.detach().clone()) for n, t in named]

    def changed(self) -> bool:
        """Whether a module, parameter or buffer was replaced, or a value changed, since
        the last look; the state seen now becomes the one to compare with."""
        with torch.no_grad():
            modules = list(self.model.named_modules())
            same = len(modules) == len(self._modules) and all(
                a == c and b is d for (a, b), (c, d) in zip(modules, self._modules, strict=True)
            )
            if same:
                named = list(
                    itertools.chain(self.model.named_parameters(), self.model.named_buffers())
                )
                same = len(named) == len(self._tensors) and all(
                    n == m and t is u and torch.equal(t, copy)
                    for (n, t), (m, u, copy) in zip(named, self._tensors, strict=True)
                )
        if not same:
            self._take()
        return not same
