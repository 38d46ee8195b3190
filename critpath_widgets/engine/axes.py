"""Which axis of a site output holds its features, read off the output's autograd history.

A convolution or batch norm makes (N, C, ...) outputs, features on dim 1; a linear
layer or layer norm acts on the last dim, as in transformers (N, T, D) and
channels-last blocks (N, H, W, C) of ConvNeXt, Swin and MaxViT. The node that made a
site's input, found a few steps back from the activation, tells which.
"""

from __future__ import annotations

import torch

#: at most this many autograd nodes are read back from a site output
MAX_NODES = 8

#: node names (less "Backward<k>") with features on dim 1: convolutions of every
#: backend, batch and group norm (a folded conv is a plain conv), pooling
_FIRST_PARTS = ("Conv", "BatchNorm", "GroupNorm", "Pool")
#: node names (less "Backward<k>") of ops on the last dim: linear layers and layer norms
_LAST = frozenset(
    {
        "Addmm",
        "Mm",
        "Bmm",
        "Baddbmm",
        "Addbmm",
        "Linear",
        "MkldnnLinear",
        "NativeLayerNorm",
        "LayerNorm",
        "FusedRmsNorm",
    }
)
#: nodes that keep the layout of their first input: elementwise ops, activations,
#: dropout, copies and views that do not move axes (a permute or transpose does: it
#: ends the walk undecided)
_SKIP = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Hardtanh",
        "Gelu",
        "Silu",
        "Sigmoid",
        "Tanh",
        "Elu",
        "Celu",
        "Softplus",
        "Hardswish",
        "Hardsigmoid",
        "Mish",
        "Prelu",
        "PreluKernel",
        "Threshold",
        "Clamp",
        "ClampMin",
        "ClampMax",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Pow",
        "Clone",
        "View",
        "UnsafeView",
        "Reshape",
        "ReshapeAlias",
        "Alias",
        "Expand",
        "ToCopy",
        "NativeDropout",
        "Dropout",
        "FeatureDropout",
    }
)


def _base(name: str) -> str:
    """ "GeluBackward0" -> "Gelu" (names without the suffix, say AccumulateGrad, as they are)."""
    return name.rstrip("0123456789").removesuffix("Backward")


def _decide(node: object) -> bool | None:
    """Walk back from ``node`` along first inputs; True/False once a node tells the layout."""
    for _ in range(MAX_NODES):
        if node is None:
            return None
        base = _base(node.name())
        if base in _LAST:
            return True
        if any(part in base for part in _FIRST_PARTS):
            return False
        if base not in _SKIP:
            return None
        # the first input that has a history (constants and leaves give None edges)
        node = next((f for f, _ in node.next_functions if f is not None), None)
    return None


def feature_axis_last(out: torch.Tensor) -> bool:
    """Whether a site output's features are on its last axis (else on dim 1), read off
    its autograd history; undecided (no history, an unknown or axis-moving op): True for
    (N, T, D) outputs, False otherwise (2-D (N, D) outputs are the same either way)."""
    decided = _decide(out.grad_fn)
    if decided is not None:
        return decided
    return out.dim() == 3
