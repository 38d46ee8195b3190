"""A small random ResNet-18 (10 classes) and random photos: explorer tests that need a
real torchvision network but not the default model's weights."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from PIL import Image


def preprocess(im: Image.Image) -> torch.Tensor:
    """PIL -> (3, 64, 64) tensor in [-1, 1]."""
    arr = np.array(im.convert("RGB").resize((64, 64)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def photo(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A random RGB photo of ``size`` (height, width)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), "RGB")


def resnet() -> torch.nn.Module:
    """ResNet-18 with 10 classes, seeded random weights, eval mode."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()
