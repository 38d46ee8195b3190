"""torchvision's classification families, and an independent count of their sites.

Shared by the coverage matrix test (small configurations, random weights) and
``benchmarks/bench_coverage.py`` (the zoo's own configurations). The count of sites
comes from ``torch.fx``: a symbolic trace lists every call of an activation module and
every call of an activation function in the graph, without running the engine's
hooks or its function mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torchvision.models as tvm
from torch import fx, nn

from critpath_widgets.engine import DEFAULT_SITE_TYPES
from critpath_widgets.engine.functional import FUNCTION_KINDS


class Family(NamedTuple):
    """One family: how to build a small member (random weights) and its input side."""

    name: str
    build: Callable[[], nn.Module]
    size: int
    #: the zoo's own configuration, for the benchmark's table
    full: Callable[[], nn.Module]
    full_size: int = 224


def _vit_small() -> nn.Module:
    return tvm.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128
    )


def _swin_small() -> nn.Module:
    return tvm.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=24,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=[4, 4],
    )


FAMILIES: list[Family] = [
    Family("AlexNet", tvm.alexnet, 64, tvm.alexnet),
    Family("VGG", tvm.vgg11, 32, tvm.vgg16),
    Family("ResNet", tvm.resnet18, 64, tvm.resnet50),
    Family("ResNeXt", tvm.resnext50_32x4d, 64, tvm.resnext50_32x4d),
    Family("Wide ResNet", tvm.wide_resnet50_2, 64, tvm.wide_resnet50_2),
    Family("DenseNet", tvm.densenet121, 64, tvm.densenet121),
    Family(
        "GoogLeNet",
        lambda: tvm.googlenet(aux_logits=False, init_weights=False),
        64,
        lambda: tvm.googlenet(aux_logits=False, init_weights=False),
    ),
    Family(
        "Inception v3",
        lambda: tvm.inception_v3(aux_logits=False, init_weights=False),
        80,
        lambda: tvm.inception_v3(aux_logits=False, init_weights=False),
        299,
    ),
    Family("MobileNet v2", tvm.mobilenet_v2, 64, tvm.mobilenet_v2),
    Family("MobileNet v3", tvm.mobilenet_v3_small, 64, tvm.mobilenet_v3_large),
    Family("EfficientNet", tvm.efficientnet_b0, 64, tvm.efficientnet_b0),
    Family("EfficientNet v2", tvm.efficientnet_v2_s, 64, tvm.efficientnet_v2_s),
    Family("RegNet", tvm.regnet_y_400mf, 64, tvm.regnet_y_400mf),
    Family("ShuffleNet", tvm.shufflenet_v2_x0_5, 64, tvm.shufflenet_v2_x1_0),
    Family("SqueezeNet", tvm.squeezenet1_0, 64, tvm.squeezenet1_1),
    Family("MNASNet", tvm.mnasnet0_5, 64, tvm.mnasnet1_0),
    Family("ConvNeXt", tvm.convnext_tiny, 64, tvm.convnext_tiny),
    Family("ViT", _vit_small, 64, tvm.vit_b_16),
    Family("Swin", _swin_small, 64, tvm.swin_t),
    Family("MaxViT", tvm.maxvit_t, 224, tvm.maxvit_t),
]

_METHOD_KINDS = {"relu": "relu", "relu_": "relu"}


def fx_site_count(model: nn.Module) -> tuple[int, dict[str, int]]:
    """Calls of default site modules and activation functions in the model's fx graph
    (eval mode), and how many of each kind."""

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, DEFAULT_SITE_TYPES) or super().is_leaf_module(m, qualname)

    root = model.eval()
    graph = Tracer().trace(root)
    kinds: dict[str, int] = {}
    for node in graph.nodes:
        kind = None
        if node.op == "call_module":
            m = root.get_submodule(node.target)
            if isinstance(m, DEFAULT_SITE_TYPES):
                kind = type(m).__name__
        elif node.op == "call_function":
            try:
                k = FUNCTION_KINDS.get(node.target)
            except TypeError:
                k = None
            kind = None if k is None else f"F.{k}"
        elif node.op == "call_method" and node.target in _METHOD_KINDS:
            kind = f"F.{_METHOD_KINDS[node.target]}"
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
    return sum(kinds.values()), kinds


def build(family: Family, full: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """A member of the family in eval mode with random weights (a ViT's zero head
    re-drawn, so that its logits depend on the input) and a random input for it."""
    torch.manual_seed(0)
    model = (family.full if full else family.build)().eval()
    for m in model.modules():  # torchvision's ViT initialises its head to zero
        if isinstance(m, nn.Linear) and not m.weight.any():
            nn.init.normal_(m.weight, std=0.02)
    side = family.full_size if full else family.size
    return model, torch.randn(1, 3, side, side)
