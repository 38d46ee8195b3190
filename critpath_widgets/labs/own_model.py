"""Lab 04, "Your own model": weights from a file, a custom module, a transformer, the errors.

The context rebuilds, with the same seeds as the notebook, every model the exercises ask
about (it never reads the notebook's variables): a torchvision ResNet-18 with random
weights, the small custom :class:`TinyNet` (its ReLUs called as ``F.relu``) and a tiny
torchvision Vision Transformer. The expected values come by routes of their own where
one exists: a plain forward for the predicted class, a forward hook for a site's size,
and a hand-written masked forward of TinyNet for the pathway logit.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CritpathError, SiteWarning
from .exercises import Exercise, Mistake
from .lab import Lab

SEED = 0
"""Every model of the lab is drawn right after ``torch.manual_seed(SEED)``."""
PHOTO = "coffee"
SPARSITY = 0.9
"""The sparsity of the pathway-logit exercise (q6)."""
SITE = "block1:F.relu"
"""The site whose neurons q3 counts."""
CLASSES = ["cup", "bowl", "plate", "spoon", "table"]
"""TinyNet's (made-up) class names."""


class ConvBlock(nn.Module):
    """A 3x3 convolution followed by a ReLU called as a function (no module to hook)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class TinyNet(nn.Module):
    """A small classifier of 64x64 photos: three ConvBlocks, a hidden layer, 5 classes."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = ConvBlock(3, 8, stride=2)
        self.block1 = ConvBlock(8, 16, stride=2)
        self.block2 = ConvBlock(16, 32, stride=2)
        self.fc = nn.Linear(32, 32)
        self.act = nn.ReLU()
        self.head = nn.Linear(32, classes)
        for m in self.modules():  # He initialisation, zero biases
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        x = x.mean(dim=(2, 3))
        return self.head(self.act(self.fc(x)))


def preprocess_64(image: Any) -> torch.Tensor:
    """PIL photo -> normalised (3, 64, 64) tensor: TinyNet's and the tiny ViT's input."""
    from torchvision import transforms as T

    t = T.Compose(
        [
            T.Resize(72),
            T.CenterCrop(64),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    return t(image.convert("RGB"))


def tiny_vit() -> nn.Module:
    """torchvision's VisionTransformer, small (64 px, 16 px patches, 2 layers), seeded,
    its zero-initialised head re-drawn so that its logits depend on the input."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(SEED)
    vit = VisionTransformer(
        image_size=64,
        patch_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=len(CLASSES),
    ).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.02)
    return vit


def _tiny_net() -> TinyNet:
    torch.manual_seed(SEED)
    return TinyNet().eval()


def setup() -> SimpleNamespace:
    """The lab's models and inputs, rebuilt with the notebook's seeds."""
    import torchvision

    from ..models import load_model, sample_image

    photo = sample_image(PHOTO)
    folder = tempfile.TemporaryDirectory(prefix="critpath_lab04_")
    weights = Path(folder.name) / "my_resnet18.pt"
    torch.manual_seed(SEED)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    bundle = load_model("resnet18", weights=weights)
    net = _tiny_net()
    return SimpleNamespace(
        folder=folder,  # kept alive: the weights file lives as long as the context
        weights=weights,
        photo=photo,
        bundle=bundle,
        x=bundle.preprocess(photo)[None],
        net=net,
        x_small=preprocess_64(photo)[None],
        vit=tiny_vit(),
    )


# ---------------------------------------------------------------- expected values
def _predicted(ctx: SimpleNamespace) -> int:
    with torch.no_grad():
        return int(ctx.bundle.model(ctx.x).argmax(dim=1))


def _default_model_prediction(ctx: SimpleNamespace) -> int:
    """What the pretrained default model (EfficientNet-Lite0) predicts for the photo."""
    from ..models import load_model

    default = load_model()
    with torch.no_grad():
        return int(default.model(default.preprocess(ctx.photo)[None]).argmax(dim=1))


def _explainer(model: nn.Module, sites: Any = None) -> Any:
    from ..engine import PathwayExplainer

    return PathwayExplainer(model, sites=sites)


def _site_count(ctx: SimpleNamespace, sites: Any = None) -> int:
    return len(_explainer(ctx.net, sites).activations(ctx.x_small).names)


def _block1_output(ctx: SimpleNamespace) -> torch.Tensor:
    """block1's output (the F.relu call inside it), read by a plain forward hook."""
    out: list[torch.Tensor] = []
    handle = ctx.net.block1.register_forward_hook(lambda _m, _i, o: out.append(o.detach()))
    try:
        with torch.no_grad():
            ctx.net(ctx.x_small)
    finally:
        handle.remove()
    return out[0][0]


def _tiny_forward(net: TinyNet, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> Any:
    """TinyNet's forward written out, each ReLU output multiplied by its mask (if any)."""
    acts: list[torch.Tensor] = []

    def site(a: torch.Tensor) -> torch.Tensor:
        if masks is not None:
            a = a * masks[len(acts)]
        acts.append(a)
        return a

    h = site(F.relu(net.stem.conv(x)))
    h = site(F.relu(net.block1.conv(h)))
    h = site(F.relu(net.block2.conv(h)))
    h = site(F.relu(net.fc(h.mean(dim=(2, 3)))))
    return net.head(h), acts


def _pathway_logits(ctx: SimpleNamespace, sparsity: float) -> torch.Tensor:
    """TinyNet's logits through its NeuronMCT pathway, by plain autograd: score every
    neuron |a * dy/da|, keep the top round((1 - sparsity) * N) over all sites, and run
    the forward again with every other neuron's output multiplied by 0."""
    net, x = ctx.net, ctx.x_small
    logits, acts = _tiny_forward(net, x)
    target = int(logits.argmax(dim=1))
    grads = torch.autograd.grad(logits[0, target], acts)
    scores = torch.cat([(a * g).abs().flatten() for a, g in zip(acts, grads, strict=True)])
    keep = round((1 - sparsity) * scores.numel())
    flat = torch.zeros_like(scores)
    flat[scores.topk(keep).indices] = 1.0
    masks, start = [], 0
    for a in acts:
        masks.append(flat[start : start + a.numel()].view_as(a))
        start += a.numel()
    with torch.no_grad():
        out, _ = _tiny_forward(net, x, masks)
    return out[0]


def _pathway_logit(ctx: SimpleNamespace, sparsity: float = SPARSITY) -> float:
    logits = _pathway_logits(ctx, sparsity)
    with torch.no_grad():
        target = int(ctx.net(ctx.x_small).argmax(dim=1))
    return float(logits[target])


def _full_logit(ctx: SimpleNamespace) -> float:
    with torch.no_grad():
        return float(ctx.net(ctx.x_small).max())


def _pathway_probability(ctx: SimpleNamespace) -> float:
    logits = _pathway_logits(ctx, SPARSITY)
    with torch.no_grad():
        target = int(ctx.net(ctx.x_small).argmax(dim=1))
    return float(logits.softmax(dim=0)[target])


def _vit_piecewise_linear(ctx: SimpleNamespace) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SiteWarning)
        return bool(_explainer(ctx.vit).explain(ctx.x_small).piecewise_linear)


def _error_name(action: Any) -> str:
    """The name of the critpath_widgets exception ``action()`` raises."""
    try:
        action()
    except CritpathError as err:
        return type(err).__name__
    raise AssertionError("the action raised no critpath_widgets error")


def _mismatched_weights(ctx: SimpleNamespace) -> str:
    from ..models import load_model

    return _error_name(lambda: load_model("resnet34", weights=ctx.weights))


def _no_batch_dimension(ctx: SimpleNamespace) -> str:
    return _error_name(lambda: _explainer(ctx.net).explain(ctx.x_small[0]))


ERRORS = ["InputError", "InputTypeError", "ModelError", "OptionError"]

EXERCISES = [
    Exercise(
        "q1",
        "Which class index does the random-weight ResNet-18 (seed 0, loaded from your "
        "weights file) predict for the coffee photo, preprocessed by bundle.preprocess?",
        _predicted,
        kind="int",
        hint="Run bundle.model on x = bundle.preprocess(photo)[None] under torch.no_grad() "
        "and take the argmax over dim 1; int(...) turns it into a Python int.",
        mistakes=[
            Mistake(
                _default_model_prediction,
                "that is the pretrained default model's answer (cw.load_model() without "
                "arguments); ask the bundle loaded from your weights file.",
            )
        ],
    ),
    Exercise(
        "q2",
        "How many sites does the engine find in TinyNet with the default sites=None?",
        _site_count,
        kind="int",
        hint="Explain x_small and count e.site_names: every call of an activation, "
        "module or function, is one site.",
        mistakes=[
            Mistake(
                lambda ctx: _site_count(ctx, F.relu),
                "you counted only the F.relu calls; the nn.ReLU module `act` is a site too.",
            ),
            Mistake(
                lambda ctx: _site_count(ctx, nn.ReLU),
                "you counted only activation modules, as module hooks would; the F.relu "
                "calls inside the ConvBlocks are sites too.",
            ),
        ],
    ),
    Exercise(
        "q3",
        f"How many neurons does the site {SITE!r} have for one 64x64 photo?",
        lambda ctx: int(_block1_output(ctx).numel()),
        kind="int",
        hint="A site's neurons are all the values of its output for one sample: "
        "channels x height x width (e.layer_summary() lists them per site).",
        mistakes=[
            Mistake(
                lambda ctx: int(_block1_output(ctx).shape[0]),
                "that is the number of channels; every spatial position of every "
                "channel is a neuron.",
            ),
            Mistake(
                lambda ctx: int(_block1_output(ctx)[0].numel()),
                "that is the number of positions of one channel; multiply by the channels.",
            ),
            Mistake(
                lambda ctx: int(_explainer(ctx.net).activations(ctx.x_small).outputs[0][0].numel()),
                "that is the first site, the stem's; pick the site by its name in e.site_names.",
            ),
        ],
    ),
    Exercise(
        "q4",
        "Which exception does cw.load_model('resnet34', weights='my_resnet18.pt') raise?",
        _mismatched_weights,
        kind="choice",
        choices=ERRORS,
        hint="Try it in a try/except and print type(err).__name__.",
        mistakes=[
            Mistake(
                lambda ctx: "InputError",
                "the file exists and holds a good state dict: the trouble is that its "
                "tensors do not fit ResNet-34's modules, a problem of the model.",
            )
        ],
    ),
    Exercise(
        "q5",
        "Which exception does ex_net.explain(x_small[0]) raise (the photo tensor without "
        "its batch dimension)?",
        _no_batch_dimension,
        kind="choice",
        choices=ERRORS,
        hint="Try it in a try/except and print type(err).__name__ and the message.",
        mistakes=[
            Mistake(
                lambda ctx: "InputTypeError",
                "a tensor is the right type; it is its shape (3-D, not (N, C, H, W)) that "
                "is wrong.",
            ),
            Mistake(
                lambda ctx: "ModelError",
                "the model is fine; the input is what the message complains about.",
            ),
        ],
    ),
    Exercise(
        "q6",
        f"TinyNet's logit of its predicted class through the NeuronMCT pathway at "
        f"sparsity {SPARSITY} (scope 'global')?",
        _pathway_logit,
        rtol=1e-3,
        hint="e.pathway_logits[0, e.target[0]] of ex_net.explain(x_small, sparsity=0.9) "
        "(or e_net.at_sparsity(0.9)).",
        mistakes=[
            Mistake(
                _full_logit,
                "that is the full network's logit (e.logits); the pathway's is e.pathway_logits.",
            ),
            Mistake(
                lambda ctx: _pathway_logit(ctx, 0.7),
                "that is the pathway at the default sparsity 0.7; pass sparsity=0.9.",
            ),
            Mistake(
                _pathway_probability,
                "that is a probability (after softmax); the question asks for the logit.",
            ),
        ],
    ),
    Exercise(
        "q7",
        "Are the tiny ViT's sites piecewise linear (so that the pathway gradient is the "
        "exact gradient of the pathway's local linear model)?",
        _vit_piecewise_linear,
        kind="bool",
        hint="Look at e_vit.piecewise_linear and e_vit.nonlinear_kinds: which activation "
        "does a ViT's MLP use, and is it made of straight pieces?",
    ),
    Exercise(
        "q8",
        "How many channels (the size of the feature axis) does one site of the tiny ViT have?",
        lambda ctx: int(ctx.vit.encoder.layers[0].mlp[0].out_features),
        kind="int",
        hint="A token site's output is (N, T, D): its channels are the last dim, the MLP's "
        "hidden width (len(e_vit.layer_summary()[0].channel_total)).",
        mistakes=[
            Mistake(
                lambda ctx: 1 + (64 // 16) ** 2,
                "that is the number of tokens (16 patches and the class token); the channels "
                "are the last dim.",
            ),
            Mistake(
                lambda ctx: int(ctx.vit.hidden_dim),
                "that is the width of the residual stream (hidden_dim); the GELU sits inside "
                "the MLP, whose hidden width is mlp_dim.",
            ),
            Mistake(
                lambda ctx: (
                    (1 + (64 // 16) ** 2) * int(ctx.vit.encoder.layers[0].mlp[0].out_features)
                ),
                "that is every neuron of the site (tokens x channels); count the channels only.",
            ),
        ],
    ),
]

LAB = Lab("own_model", "Lab 04: your own model", setup, EXERCISES)
"""The lab, as ``open_lab("own_model")`` returns it."""
