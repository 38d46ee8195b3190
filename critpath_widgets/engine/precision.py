"""Explanations in float64 on request: the model run through float64 copies of its tensors.

In float32 a ReLU whose input lies within rounding of 0 can gate either way, and the
gate decides whether everything behind it is in the pathway gradient; float64 moves
that boundary out of reach of ordinary rounding. :class:`Float64Net` is what runs then:
it calls the user's model with ``torch.func.functional_call``, which runs the model's
own modules (so the site hooks, and any hook of the user's, fire as usual) with its
parameters and buffers swapped, for the duration of that forward, for float64 copies.
The copies are made from the live tensors at the start of every explainer call and
dropped at its end, so an edit between calls is always seen and nothing is held in
between; the swap is undone on every exit path, so the model keeps its own tensor
objects, dtypes, values and ``requires_grad`` flags. (While a forward runs, the model's
attributes do hold the copies: another thread running the model at that moment would
see them. Tensors the model keeps outside its parameters and buffers stay as they are.)
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import OptionError

#: the dtypes ``PathwayExplainer(dtype=...)`` accepts besides None (the model's own)
DTYPES: tuple[torch.dtype, ...] = (torch.float64,)


def check_dtype(dtype: object) -> torch.dtype | None:
    """``dtype`` if it is None or one the explainer can run in, else an OptionError."""
    if dtype is None or dtype in DTYPES:
        return dtype  # type: ignore[return-value]
    raise OptionError(f"dtype must be None (the model's own) or torch.float64, got {dtype!r}")


def _float64(t: torch.Tensor) -> torch.Tensor:
    """A float64 copy of a floating tensor, outside autograd; other tensors as they are
    (an integer buffer such as BatchNorm's ``num_batches_tracked``)."""
    if not t.is_floating_point():
        return t
    return t.detach().to(torch.float64)


class Float64Net(nn.Module):
    """Runs ``model`` on float64 copies of its parameters and buffers (see the module
    docstring); the copies exist only inside :meth:`copies`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # a child of this wrapper, so that modules() reaches the model's modules (hooks
        # of the passes go on them); registering it here changes nothing in the model
        self.model = model
        #: name -> float64 copy, made from the live tensors per call (None between calls)
        self._tensors: dict[str, torch.Tensor] | None = None

    @contextlib.contextmanager
    def copies(self) -> Iterator[Float64Net]:
        """Float64 copies of the model's tensors as they are now, for one call."""
        # tied tensors are listed once; functional_call ties their other names to them
        named = itertools.chain(self.model.named_parameters(), self.model.named_buffers())
        self._tensors = {name: _float64(t) for name, t in named}
        try:
            yield self
        finally:
            self._tensors = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for ``x`` computed in float64 (the swap undone on return)."""
        assert self._tensors is not None, "Float64Net runs only inside copies()"
        return torch.func.functional_call(self.model, self._tensors, (x.to(torch.float64),))
