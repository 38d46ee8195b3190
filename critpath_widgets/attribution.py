"""One calling convention for every map: ``attribute(model, x, method, target)``.

Pathway methods run the engine (:class:`~.engine.PathwayExplainer`); the baselines run
Captum's own implementations (not rewritten here), so a comparison is against the
published code. Every map is a tensor shaped like the input, (N, C, H, W). The user's
model is never modified: baselines run in eval mode with the flags restored afterwards,
and the methods that need out-of-place, non-shared modules (guided backprop, DeepLift)
run on a deep copy. :func:`quantus_explain` wraps :func:`attribute` as a Quantus
``explain_func`` (numpy in, numpy out).

Imports no widget library; Captum is imported on first use of a baseline.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine import METHODS as ENGINE_METHODS
from .engine import PathwayExplainer
from .engine.sites import eval_mode, first_in_channels, unwrap_model
from .engine.validate import check_input, resolve_target
from .errors import CritpathError, InputTypeError, ModelError, OptionError

Target = int | Sequence[int] | torch.Tensor | np.ndarray | None

#: attribution method name -> one-line description, in the order pickers list them
ATTRIBUTION_METHODS: dict[str, str] = {
    "pathway_mct": "Pathway gradient through the critical pathway chosen by NeuronMCT (Taylor)",
    "pathway_intgrad": "Pathway gradient through the critical pathway chosen by NeuronIntGrad",
    "pathway_greedy": "Pathway gradient through the critical pathway chosen greedily",
    "pathway_random": "Pathway gradient through a random pathway (a sanity baseline)",
    "pathway_dgr": "Pathway gradient through the pathway chosen by DGR (needs the engine's dgr)",
    "gradient": "Plain gradient of the target logit (Captum Saliency, abs=False)",
    "gradient_x_input": "Gradient times input (Captum InputXGradient)",
    "integrated_gradients": "Integrated gradients from a zero baseline (Captum)",
    "smoothgrad": "Gradient averaged over noisy copies of the input (Captum NoiseTunnel)",
    "guided_backprop": "Guided backpropagation through ReLU modules (Captum, on a copy)",
    "gradcam": "Grad-CAM of the last convolution, upsampled to the input (Captum LayerGradCam)",
    "deeplift": "DeepLift from a zero baseline (Captum, on a copy)",
}

#: pathway method -> the engine's selection method it runs
PATHWAY_METHODS: dict[str, str] = {
    "pathway_mct": "neuron_mct",
    "pathway_intgrad": "neuron_intgrad",
    "pathway_greedy": "greedy",
    "pathway_random": "random",
    "pathway_dgr": "dgr",
}

#: baseline -> its options and their defaults (None: computed from the input)
BASELINE_OPTIONS: dict[str, dict[str, Any]] = {
    "gradient": {},
    "gradient_x_input": {},
    "integrated_gradients": {"n_steps": 50, "internal_batch_size": None},
    "smoothgrad": {"nt_samples": 25, "stdevs": None, "nt_samples_batch_size": None},
    "guided_backprop": {},
    "gradcam": {"layer": None, "relu_attributions": False},
    "deeplift": {},
}

# Explainers per model, so that repeated calls reuse the folded twin (an explainer checks
# its model on every call, so it is never stale). An explainer holds its model, so a
# weak key alone would keep every model alive for good: the cache keeps the
# _CACHE_MODELS most recently used models only, and clear_cache() empties it.
_EXPLAINERS: weakref.WeakKeyDictionary[nn.Module, PathwayExplainer] = weakref.WeakKeyDictionary()
_CACHE_MODELS = 2


def clear_cache() -> None:
    """Forget the cached explainers (and with them the references to their models)."""
    _EXPLAINERS.clear()


def explainer_for(model: nn.Module) -> PathwayExplainer:
    """The cached :class:`PathwayExplainer` of ``model``, built on first use."""
    ex = _EXPLAINERS.pop(model, None)
    if ex is None:
        ex = PathwayExplainer(model)
    # insertion order = use order: the least recently used models go first
    _EXPLAINERS[model] = ex
    while len(_EXPLAINERS) > _CACHE_MODELS:
        del _EXPLAINERS[next(iter(_EXPLAINERS.keys()))]
    return ex


def attribute(
    model: nn.Module, x: torch.Tensor, method: str, target: Target = None, **options: Any
) -> torch.Tensor:
    """The ``method`` map (N, C, H, W) of ``model``'s ``target`` logit at ``x``, whatever
    the method, so that maps compare and evaluate through one call.

    ``target`` None explains each sample's predicted class; an int, ints, a tensor or a
    numpy array of ints name the class per sample. Pathway methods take the engine's
    options (``sparsity``, ``scope``, ``steps``, ...); the baselines' options are in
    :data:`BASELINE_OPTIONS`. Grad-CAM's map has one channel, upsampled bilinearly to
    (H, W) and repeated over the C input channels so that every map has the input's shape.
    """
    if not isinstance(method, str) or method not in ATTRIBUTION_METHODS:
        raise OptionError(
            f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}"
        )
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method in PATHWAY_METHODS:
        engine_method = PATHWAY_METHODS[method]
        if engine_method not in ENGINE_METHODS:
            raise OptionError(
                f"{method!r} is unavailable: the engine has no {engine_method!r} method "
                f"(it has {', '.join(ENGINE_METHODS)})"
            )
        return explainer_for(model).explain(x, target, method=engine_method, **options).saliency
    return _baseline(model, x, method, target, options)


def quantus_explain(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: Any,
    method: str | None = None,
    device: Any = None,
    **options: Any,
) -> np.ndarray:
    """:func:`attribute` as a Quantus ``explain_func``: numpy in, numpy (N, C, H, W) out.

    Pass the method through ``explain_func_kwargs={"method": ...}``, with its options
    beside it. ``device`` (which Quantus adds) is ignored: inputs go to the model's device.
    """
    del device  # the model's own device wins, as everywhere in this package
    if method is None:
        raise OptionError(
            "quantus_explain needs a method: explain_func_kwargs={'method': 'gradient'}"
        )
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    a = attribute(model, inputs, method, targets, **options)
    return a.detach().cpu().numpy()


# ---------------------------------------------------------------------------- baselines
def _baseline(
    model: nn.Module, x: Any, method: str, target: Target, options: dict[str, Any]
) -> torch.Tensor:
    """Run one Captum baseline, the model in eval mode and its state restored."""
    opts = _check_options(method, options)
    try:
        import captum.attr  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"{method!r} runs Captum's implementation: pip install 'critpath-widgets[eval]'"
        ) from e
    x = check_input(x, model, first_in_channels(model))
    net = unwrap_model(model)
    copied = method in ("guided_backprop", "deeplift")
    if copied:
        net = _out_of_place_copy(net)
    with torch.enable_grad(), eval_mode(net):
        with torch.no_grad():
            logits = net(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ModelError(
                "the model must return logits shaped (N, classes), got "
                f"{getattr(logits, 'shape', type(logits).__name__)}"
            )
        tgt = resolve_target(target, logits)
        # a leaf of our own that requires grad (x is detached from the caller's tensor)
        x = x.clone().requires_grad_(True)
        try:
            with warnings.catch_warnings():
                # Captum's notes on hooks it sets (on our copy) and removes again
                warnings.filterwarnings("ignore", "Setting .*hooks", UserWarning)
                a = _RUNNERS[method](net, x, tgt, opts)
        except CritpathError:
            raise
        except (AssertionError, RuntimeError) as e:
            # Captum checks by assert; the copy-based methods also fail as RuntimeError in
            # the hooks they set. Any other method's RuntimeError is the model's own.
            if isinstance(e, RuntimeError) and method not in _LIMITS:
                raise
            raise ModelError(
                f"Captum's {method} failed on this model: {e}. " + _LIMITS.get(method, "")
            ) from e
    return a.detach()


#: what the copy-based methods cannot handle, added to the error Captum raises
_LIMITS = {
    "guided_backprop": (
        "Guided backprop changes the backward pass of nn.ReLU modules (ReLU6 modules are "
        "split into a ReLU and a clamp for it); F.relu called in forward is not seen."
    ),
    "deeplift": (
        "Captum's DeepLift needs every nonlinearity to be a module of its own, called "
        "once per forward (a ReLU module reused twice, as in torchvision's ResNet blocks, "
        "or F.relu in forward is not supported)."
    ),
}


def _check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The baseline's options with defaults filled in; an unknown one raises OptionError."""
    allowed = BASELINE_OPTIONS[method]
    for k in options:
        if k not in allowed:
            raise OptionError(
                f"unknown option {k!r} for method {method!r}; accepted: "
                f"{', '.join(sorted(allowed)) or 'none'}"
            )
    return {**allowed, **options}


def _out_of_place_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every ``inplace`` flag off (the user's model untouched)."""
    try:
        net = copy.deepcopy(model)
    except Exception as e:  # a hook or attribute that cannot be copied
        raise ModelError(f"this method runs on a copy of the model, which failed: {e}") from e
    for m in net.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return net


def _gradient(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(net).attribute(x, target=t, abs=False)


def _gradient_x_input(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import InputXGradient

    return InputXGradient(net).attribute(x, target=t)


def _integrated_gradients(
    net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict
) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(net).attribute(
        x,
        baselines=torch.zeros_like(x),
        target=t,
        n_steps=o["n_steps"],
        internal_batch_size=o["internal_batch_size"],
    )


def _smoothgrad(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency

    # one noise level for the whole batch: 15% of the input's value range by default
    stdevs = (
        o["stdevs"]
        if o["stdevs"] is not None
        else 0.15 * float(x.detach().max() - x.detach().min())
    )
    return NoiseTunnel(Saliency(net)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=o["nt_samples"],
        nt_samples_batch_size=o["nt_samples_batch_size"],
        stdevs=stdevs,
        target=t,
        abs=False,
    )


def _guided_backprop(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    return GuidedBackprop(_split_clamps(net)).attribute(x, target=t)


def _split_clamps(net: nn.Module) -> nn.Module:
    """The copy with each ReLU6 (and Hardtanh clamping at 0) as a ReLU then a clamp:
    Captum's guided backprop rewrites the backward of ``nn.ReLU`` modules only, so on a
    ReLU6 network (EfficientNet-Lite0, MobileNet v2) it would silently be the plain
    gradient. ReLU6(x) = min(ReLU(x), 6), so the function is the same; a module reused
    in several places stays one (reused) module."""
    done: dict[int, nn.Module] = {}
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Hardtanh) and child.min_val == 0:
                if id(child) not in done:
                    done[id(child)] = nn.Sequential(nn.ReLU(), nn.Hardtanh(0.0, child.max_val))
                setattr(parent, name, done[id(child)])
    return net


def _deeplift(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import DeepLift

    return DeepLift(net).attribute(x, baselines=torch.zeros_like(x), target=t)


def gradcam_layer(model: nn.Module, layer: nn.Module | str | None = None) -> nn.Module:
    """The module Grad-CAM explains: ``layer`` (a module of the model or its name), by
    default the last ``nn.Conv2d`` in registration order."""
    if layer is None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ModelError("gradcam needs an nn.Conv2d in the model, or a layer= option")
        return convs[-1]
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError as e:
            raise OptionError(f"layer {layer!r} is not a module of the model") from e
    if isinstance(layer, nn.Module) and any(m is layer for m in model.modules()):
        return layer
    raise OptionError("layer must be a module of the model or its name, e.g. 'layer4.1.conv2'")


def _gradcam(net: nn.Module, x: torch.Tensor, t: torch.Tensor, o: dict) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    layer = gradcam_layer(net, o["layer"])
    cam = LayerGradCam(net, layer).attribute(x, target=t, relu_attributions=o["relu_attributions"])
    up = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    # (N, 1, H, W) -> (N, C, H, W): every map has the input's shape
    return up.repeat(1, x.shape[1], 1, 1)


_RUNNERS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor, dict], torch.Tensor]] = {
    "gradient": _gradient,
    "gradient_x_input": _gradient_x_input,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
    "guided_backprop": _guided_backprop,
    "gradcam": _gradcam,
    "deeplift": _deeplift,
}

__all__ = [
    "ATTRIBUTION_METHODS",
    "BASELINE_OPTIONS",
    "PATHWAY_METHODS",
    "attribute",
    "clear_cache",
    "explainer_for",
    "gradcam_layer",
    "quantus_explain",
]
