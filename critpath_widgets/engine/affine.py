"""Linear layers that read a site's alpha-scaled copies, run once for all of them.

In NeuronIntGrad's broadcast layout (one image) a site's output ``a`` turns into the
batch ``alpha * a``, one row per alpha. A convolution or linear layer that reads that
batch directly computes ``W(alpha a) + b = alpha (W a) + b``, so :class:`AffineShortcut`
runs the layer once on ``a`` (batch 1) and scales its output. NeuronIntGrad only needs
the gradient with respect to the batch summed over alphas, and through the layer that
sum is ``W^T (sum over alphas of the output gradient)``: one batch-1 backward instead of
a batch of them. On VGG16 most sites feed a convolution directly, so this removes a
convolution forward and backward at the batch size from most suffixes.

Exact by construction for the module types in :data:`LINEAR_TYPES` (exact type, so a
subclass with its own ``forward`` is left alone) when nothing else hooks the module:
any other hook would see a batch-1 input and output, so then the layer runs normally.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .hooks import foreign_hooks
from .sites import HookOwner

#: Layers that are linear in their input plus a bias.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class AffineShortcut(HookOwner):
    """Hooks on the model's linear layers (inside ``with``): see the module docstring.

    ``arm(z, a, alphas)`` names the batch ``z = alphas * a`` that the site returned; when
    a layer took the shortcut (:attr:`used`), the gradient of :attr:`source` is the part
    of the gradient with respect to ``z``, summed over alphas, that went through it.
    """

    def __init__(self, model: nn.Module, foreign_ok: Iterable[int] = ()):
        super().__init__()
        seen = {id(m): m for m in model.modules()}
        self._modules = [m for m in seen.values() if type(m) in LINEAR_TYPES]
        self._foreign_ok = set(foreign_ok)  # ids of other hooks of ours that do nothing here
        self._ours: set[int] = set()
        self._z: torch.Tensor | None = None
        self._src: torch.Tensor | None = None
        self._alphas: torch.Tensor | None = None
        self._pending: set[int] = set()
        self.used = False  # a layer took the shortcut in this pass

    def _register(self) -> None:
        for m in self._modules:
            self._handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._post))
        self._ours = self.hook_ids | self._foreign_ok

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.arm(None, None, None)

    def arm(self, z: Any, a: Any, alphas: Any) -> None:
        """Start a pass in which ``z`` (= alphas * a) is the site's output; None disarms."""
        self._z = z
        if a is not None:
            a = a.detach()
            if a.dim() == 4:
                a = a.contiguous(memory_format=torch.channels_last)
            a.requires_grad_(True)
        self._src = a
        self._alphas = alphas
        self._pending.clear()
        self.used = False

    def _pre(self, m: nn.Module, args: tuple, kwargs: dict) -> Any:
        z = self._z
        if (
            z is None
            or kwargs
            or len(args) != 1
            or args[0] is not z
            or foreign_hooks(m, self._ours)
        ):
            return None
        self._pending.add(id(m))
        return (self._src,), {}

    def _post(self, m: nn.Module, args: tuple, out: Any) -> Any:
        if id(m) not in self._pending:
            return None
        self._pending.discard(id(m))
        assert self._alphas is not None
        b = None if m.bias is None else m.bias.detach()
        if b is not None and not isinstance(m, nn.Linear):  # channels on dim 1
            b = b.view(-1, *([1] * (out.dim() - 2)))
        self.used = True
        return _AlphaBatch.apply(out, self._alphas, b)

    @property
    def source(self) -> torch.Tensor | None:
        """The batch-1 leaf the shortcut layers read: its gradient is their part of the
        gradient with respect to ``z``, summed over alphas."""
        return self._src


class _AlphaBatch(torch.autograd.Function):
    """``alpha * (o - b) + b`` for every alpha (a batch), from a layer's batch-1 output
    ``o = W a + b``. Its backward passes on the gradient *summed* over the batch, not
    weighted by alpha: that sum, taken back through ``W``, is what NeuronIntGrad needs."""

    @staticmethod
    def forward(
        ctx: Any, o: torch.Tensor, alphas: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        v = alpha_batch(o if b is None else o - b, alphas)
        return v if b is None else v.add_(b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return sum_rows(g), None, None


def alpha_batch(a: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``alphas * a`` as a new batch, one row per alpha (``a`` has one row, or one per
    alpha); NHWC for images, since oneDNN's convolutions run faster on NHWC batches.
    Written straight into NHWC: cheaper than a product made NCHW and then converted."""
    al = alphas.view(-1, *([1] * (a.dim() - 1)))
    if a.dim() != 4:
        return a * al
    if a.shape[0] == 1:
        a = a.contiguous(memory_format=torch.channels_last)  # batch 1: cheap
    z = torch.empty(
        (al.shape[0], *a.shape[1:]),
        dtype=a.dtype,
        device=a.device,
        memory_format=torch.channels_last,
    )
    return torch.mul(a, al, out=z)


def sum_rows(g: torch.Tensor) -> torch.Tensor:
    """``g.sum(0, keepdim=True)``, fast for channels-last batches too: PyTorch sums the
    batch dimension of such a tensor much more slowly than the same memory permuted to
    NHWC."""
    if (
        g.dim() == 4
        and not g.is_contiguous()
        and g.is_contiguous(memory_format=torch.channels_last)
    ):
        return g.permute(0, 2, 3, 1).sum(0, keepdim=True).permute(0, 3, 1, 2)
    return g.sum(0, keepdim=True)
