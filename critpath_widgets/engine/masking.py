"""The ways the masked pass multiplies a site by its 0/1 weights, cheapest exact first.

Per site call, :func:`site_handlers` picks one:

1. *premask*: the site's input is multiplied by the mask in place just before a ReLU or
   ReLU6/Hardtanh with min_val 0 runs (act(z * w) = act(z) * w for 0/1 weights, and
   the activation's own backward is then already the masked backprop). Approved per
   site from the first score pass's graph (:func:`premask_sites`) and per call
   (:func:`premask_ok`).
2. *gate*: a ReLU/ReLU6 output goes through :class:`MaskedGate`, whose backward gates
   the gradient by the masked output alone (no product in the backward).
3. *in place*: the output of an activation whose backward keeps its input is scaled in
   place (:data:`_KEEPS_INPUT`).
4. *recycled*: a large output is scaled into the engine's recycled buffers (:class:`Scale`).
5. a plain product.

Each fast path is taken only where no hook of someone else's (:mod:`.hooks`) could see
the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import memory
from .graph import edge_counts
from .hooks import FORWARD, OUTPUT, foreign_hooks, foreign_hooks_anywhere

if TYPE_CHECKING:
    from .passes import PassState

#: (site index, module, positional args) before a site call
PreHandler = Callable[[int, nn.Module, tuple], None]
#: (site index, module name, output) -> replacement output or None
SiteHandler = Callable[[int, str, torch.Tensor], torch.Tensor | None]


def site_handlers(
    st: PassState, masks: list[torch.Tensor], fill: Callable[[int], None] | None = None
) -> tuple[PreHandler, SiteHandler, list[bool]]:
    """The handlers of one masked pass: ``pre`` masks a site's input in place where that
    is approved, ``apply`` masks the output of every other site; and the per-site flags
    of the sites premasked so far. ``fill(i)``, if given, writes site i's weights just
    before they are used (still in the cache for the product)."""
    hooks = st.hooks
    assert hooks is not None
    by_name = st.module_by_name
    gate = not st.protect  # the gate keeps the masked output for its backward
    # a user's hook anywhere could hold a site input that would change under it
    approved = [] if foreign_hooks_anywhere(st.net, hooks.ids) else (st.premask or [])
    premasked = [False] * len(masks)

    def pre(i: int, module: nn.Module, args: tuple) -> None:
        # the same module, with the inplace flag it had when it was approved
        ok = i < len(approved) and approved[i] == (module, getattr(module, "inplace", False))
        if ok and premask_ok(module, args, masks[i]):
            if fill is not None:
                fill(i)
            with torch.no_grad():
                args[0].mul_(masks[i])
            premasked[i] = True

    def apply(i: int, name: str, out: torch.Tensor) -> torch.Tensor | None:
        if premasked[i]:
            return None
        if fill is not None:
            fill(i)
        return scale(out, masks[i], by_name.get(name), hooks.inputs, gate, hooks.ids)

    return pre, apply, premasked


def scale(
    out: torch.Tensor,
    w: torch.Tensor,
    module: nn.Module | None,
    inputs: tuple,
    gate: bool,
    ours: set[int],
) -> torch.Tensor:
    """A site's output times its 0/1 weights, the cheapest exact way: with ``gate``, a
    ReLU/ReLU6 output through :class:`MaskedGate` (``inputs`` are the site call's);
    else in place where autograd allows it (the activation kept its input and nobody
    else has seen the output); else into recycled buffers or a plain product. ``ours``:
    the ids of the engine's hooks."""
    if gate:
        gated = gated_mask(out, w, module, inputs, ours)
        if gated is not None:
            return gated
    kind = type(module)
    if (
        kind in _KEEPS_INPUT
        and type(out.grad_fn).__name__ == _KEEPS_INPUT[kind]
        and not getattr(module, "inplace", False)
        and not foreign_hooks(module, ours, OUTPUT)  # nobody else has seen the output
    ):
        return out.mul_(w)
    if out.is_contiguous() and out.numel() * out.element_size() >= memory.RECYCLE_BYTES:
        return Scale.apply(out, w)
    return out * w


# Activations whose autograd node keeps its input, not its output (out-of-place forms):
# their output may be scaled in place, saving a fresh buffer per site.
_KEEPS_INPUT = {
    nn.ReLU6: "HardtanhBackward0",
    nn.Hardtanh: "HardtanhBackward0",
    nn.LeakyReLU: "LeakyReluBackward0",
    nn.PReLU: "PreluKernelBackward0",
}


class Scale(torch.autograd.Function):
    """a * w (w a constant 0/1 mask) with its result and gradient in the engine's recycled
    buffers (:mod:`.memory`): used for large activations that cannot be scaled in place."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """a * w into a recycled buffer; w kept for the backward."""
        ctx.save_for_backward(w)
        return torch.mul(a, w, out=memory.empty_like(a))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        """g * w into a recycled buffer (w is a constant: no gradient)."""
        (w,) = ctx.saved_tensors
        return torch.mul(g, w, out=memory.empty_like(g)), None


_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default
_HARDTANH_BACKWARD = torch.ops.aten.hardtanh_backward.default


class MaskedGate(torch.autograd.Function):
    """y = act(x) * w for a ReLU or a Hardtanh with min_val >= 0 (ReLU6), w a constant 0/1
    mask, as a function of the activation's input x. The backward gates the gradient by
    y alone, in one pass like the activation's own backward: a removed neuron's output is
    0, outside the open range where the activation passes gradient, so the gate is
    already w times the activation's derivative."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, lo: float, hi: float | None
    ) -> torch.Tensor:
        """y itself (the masked output, computed by the caller), saved for the backward."""
        ctx.save_for_backward(y)
        ctx.lo, ctx.hi = lo, hi
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        """g where lo < y (< hi), else 0: the activation's own backward, gated by y."""
        (y,) = ctx.saved_tensors
        if ctx.hi is None:
            return _THRESHOLD_BACKWARD(g, y, ctx.lo), None, None, None
        return _HARDTANH_BACKWARD(g, y, ctx.lo, ctx.hi), None, None, None


def gated_mask(
    out: torch.Tensor, w: torch.Tensor, module: nn.Module | None, inputs: tuple, ours: set[int]
) -> torch.Tensor | None:
    """The masked output through :class:`MaskedGate` where that is exact (the output's
    node is the activation's own, fed by its input, and no one else sees either), else
    None."""
    gate = gate_kind(module)
    if gate is None:
        return None
    lo, hi, node = gate
    x = inputs[0] if inputs else None
    fn = out.grad_fn
    if (
        getattr(module, "inplace", False)
        or not isinstance(x, torch.Tensor)
        or x.grad_fn is None
        or type(fn).__name__ != node
        or fn.next_functions[0][0] is not x.grad_fn
        or foreign_hooks(module, ours, FORWARD)
    ):
        return None
    return MaskedGate.apply(x, out.detach().mul_(w), lo, hi)


def gate_kind(module: nn.Module | None) -> tuple[float, float | None, str] | None:
    """(lo, hi, name of its autograd node) for a ReLU (hi None) or a Hardtanh/ReLU6 with
    min_val >= 0: activations that pass gradient only on the open range (lo, hi), so a
    removed neuron's 0 blocks it. None for any other module."""
    kind = type(module)
    if kind is nn.ReLU:
        return 0.0, None, "ReluBackward0"
    if kind in (nn.ReLU6, nn.Hardtanh) and module.min_val >= 0:
        return float(module.min_val), float(module.max_val), "HardtanhBackward0"
    return None


def premask_sites(
    logits: torch.Tensor, nodes: Sequence[tuple[Any, nn.Module | None]]
) -> list[tuple[nn.Module, bool] | None]:
    """Per site (from a recorded pass: the node that made its output, and its module),
    the module and its inplace flag when the masked pass may multiply the site's input by
    the mask in place just before the call, else None.

    For ReLU, and ReLU6/Hardtanh with min_val 0, act(z * w) = act(z) * w for 0/1 weights
    w, and the activation's own backward (gated by its saved input or result, which is
    then 0 where w is) is already the masked backprop: no product in the backward, no
    extra autograd node. Safe when nothing else reads z: an in-place module overwrites
    z itself, and for the others the graph from the logits must hold no other edge into
    z (another differentiable reader, such as a residual that adds z back).
    """
    # the edge from each candidate activation to its input's node
    edges = [fn.next_functions[0] if _premask_node(fn, m) else None for fn, m in nodes]
    counts = edge_counts(logits.grad_fn)  # readers of every output in the graph
    out: list[tuple[nn.Module, bool] | None] = []
    for (_fn, module), e in zip(nodes, edges, strict=True):
        inplace = bool(getattr(module, "inplace", False))
        ok = e is not None and (inplace or (counts[e] == 1 and not _saves_output(e[0])))
        out.append((module, inplace) if ok else None)
    return out


def _saves_output(node: Any) -> bool:
    """Whether an autograd node kept its own output for its backward (say, a ReLU feeding
    a ReLU6): that output may not be changed in place. Autograd names saved outputs
    ``result``; any other saver is caught by autograd's version check (see
    :func:`.passes.masked_pass`)."""
    return any(a.startswith("_saved_result") for a in dir(node))


def _premask_node(fn: Any, module: nn.Module | None) -> bool:
    """A gating activation with act(0) = 0 (lo == 0) whose output node is its own, fed by
    a node of this pass."""
    gate = gate_kind(module)
    if gate is None or gate[0] != 0 or (gate[1] is not None and gate[1] <= 0):
        return False
    if fn is None or type(fn).__name__ != gate[2]:
        return False
    return bool(fn.next_functions) and fn.next_functions[0][0] is not None


def premask_ok(module: nn.Module, args: tuple, w: torch.Tensor) -> bool:
    """This call's input may be masked in place: one tensor made in this pass (never a
    leaf such as the caller's input), shaped like the mask, and not a view of a tensor
    that others may read (unless the module overwrites it anyway)."""
    if len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return False
    z = args[0]
    return (
        z.grad_fn is not None
        and z.shape == w.shape
        and z.dtype == w.dtype
        and z.device == w.device
        and (z._base is None or getattr(module, "inplace", False))
    )
