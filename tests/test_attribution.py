"""attribute(): each baseline equals Captum called directly, each pathway method equals the
engine, every map is (N, C, H, W), and the user's model is left exactly as it was."""

from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import critpath_widgets as cw
from critpath_widgets import InputError, ModelError, OptionError, PathwayExplainer, attribution
from critpath_widgets.engine import METHODS as ENGINE_METHODS

from . import reference as ref

captum_attr = pytest.importorskip("captum.attr")

BASELINES = [m for m in cw.ATTRIBUTION_METHODS if m in attribution.BASELINE_OPTIONS]
PATHWAYS = list(attribution.PATHWAY_METHODS)


def small_cnn(dtype=torch.float64, bn: bool = False) -> nn.Module:
    """Convolutions, ReLUs (own module each, for DeepLift), max pooling, two classifiers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).to(dtype)


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return small_cnn().eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def inputs(dtype=torch.float64, n: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g).to(dtype)


def captum_direct(method: str, model: nn.Module, x: torch.Tensor, t, **o) -> torch.Tensor:
    """Captum called as its documentation shows, on an eval-mode copy without in-place ops."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    ca = captum_attr
    if method == "gradient":
        return ca.Saliency(m).attribute(x, target=t, abs=False)
    if method == "gradient_x_input":
        return ca.InputXGradient(m).attribute(x, target=t)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(m).attribute(
            x, baselines=0.0, target=t, n_steps=o.get("n_steps", 50)
        )
    if method == "smoothgrad":
        stdevs = o.get("stdevs", 0.15 * float(x.max() - x.min()))
        return ca.NoiseTunnel(ca.Saliency(m)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=o.get("nt_samples", 25),
            stdevs=stdevs,
            target=t,
            abs=False,
        )
    if method == "guided_backprop":
        return ca.GuidedBackprop(m).attribute(x, target=t)
    if method == "deeplift":
        return ca.DeepLift(m).attribute(x, baselines=0.0, target=t)
    if method == "gradcam":
        last = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)][-1]
        cam = ca.LayerGradCam(m, last).attribute(x, target=t)
        up = ca.LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear")
        return up.expand(-1, x.shape[1], -1, -1)
    raise AssertionError(method)


def seeded(fn, *args, **kw):
    torch.manual_seed(123)  # smoothgrad's noise comes from the global generator
    return fn(*args, **kw)


# ------------------------------------------------------------------ baselines = Captum
@pytest.mark.parametrize("method", BASELINES)
def test_baseline_equals_captum_small_cnn(cnn, method):
    x = inputs()
    t = [3, 7]
    before = ref.model_state(cnn)
    ours = seeded(cw.attribute, cnn, x, method, t)
    ref.assert_same_state(before, ref.model_state(cnn))
    theirs = seeded(captum_direct, method, cnn, x, torch.tensor(t))
    assert ours.shape == x.shape and ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in BASELINES if m != "deeplift"])
def test_baseline_equals_captum_resnet18(resnet, method):
    x = inputs(torch.float32, size=64)
    few = {"integrated_gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 3}}
    opts = few.get(method, {})
    before = ref.model_state(resnet)
    ours = seeded(cw.attribute, resnet, x, method, None, **opts)
    ref.assert_same_state(before, ref.model_state(resnet))
    pred = resnet(x).argmax(1)
    theirs = seeded(captum_direct, method, resnet, x, pred, **opts)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, theirs)


def test_deeplift_reused_relu_is_model_error(resnet):
    """torchvision's BasicBlock calls one ReLU twice: Captum's DeepLift refuses, so do we."""
    x = inputs(torch.float32, n=1, size=32)
    before = ref.model_state(resnet)
    with pytest.raises(ModelError, match="module of its own"):
        cw.attribute(resnet, x, "deeplift")
    ref.assert_same_state(before, ref.model_state(resnet))


def test_gradient_equals_engine_gradient(cnn):
    x = inputs()
    torch.testing.assert_close(
        cw.attribute(cnn, x, "gradient", 4), PathwayExplainer(cnn).gradient(x, 4)
    )


def test_gradcam_shape_and_layer_option(cnn):
    x = inputs(n=3)
    a = cw.attribute(cnn, x, "gradcam")
    assert a.shape == (3, 3, 16, 16)
    assert torch.equal(a[:, 0], a[:, 2])  # one map repeated over the channels
    by_name = cw.attribute(cnn, x, "gradcam", layer="3")
    by_module = cw.attribute(cnn, x, "gradcam", layer=cnn[3])
    torch.testing.assert_close(by_name, by_module)
    with pytest.raises(OptionError):
        cw.attribute(cnn, x, "gradcam", layer="nope")


def test_targets_in_every_form_agree(cnn):
    x = inputs()
    want = cw.attribute(cnn, x, "gradient_x_input", [5, 5])
    for t in (5, (5, 5), torch.tensor([5, 5]), np.array([5, 5]), np.int64(5)):
        torch.testing.assert_close(cw.attribute(cnn, x, "gradient_x_input", t), want)
    pred = cnn(x).argmax(1)
    torch.testing.assert_close(
        cw.attribute(cnn, x, "gradient", None), cw.attribute(cnn, x, "gradient", pred)
    )


# ------------------------------------------------------------------ pathways = engine
@pytest.mark.parametrize("method", PATHWAYS)
def test_pathway_equals_engine(cnn, method):
    skip_unavailable(method)
    engine = attribution.PATHWAY_METHODS[method]
    x = inputs()
    opts = {"sparsity": 0.5, **({"steps": 4} if engine == "neuron_intgrad" else {})}
    before = ref.model_state(cnn)
    ours = cw.attribute(cnn, x, method, 2, **opts)
    ref.assert_same_state(before, ref.model_state(cnn))
    theirs = PathwayExplainer(cnn).explain(x, 2, method=engine, **opts).saliency
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, theirs)


def test_pathway_dgr_unavailable_is_option_error(cnn):
    if "dgr" in ENGINE_METHODS:
        pytest.skip("the engine has dgr")
    with pytest.raises(OptionError, match="unavailable"):
        cw.attribute(cnn, inputs(), "pathway_dgr")


def test_explainer_cached_per_model_and_bounded():
    m1, m2, m3 = small_cnn(), small_cnn(), small_cnn()
    attribution.clear_cache()
    ex = attribution.explainer_for(m1)
    cw.attribute(m1, inputs(), "pathway_mct")
    assert attribution.explainer_for(m1) is ex
    cw.attribute(m2, inputs(), "pathway_mct")
    cw.attribute(m3, inputs(), "pathway_mct")
    assert len(attribution._EXPLAINERS) <= 2 and m1 not in attribution._EXPLAINERS
    gone = weakref.ref(m1)
    del m1, ex
    gc.collect()
    assert gone() is None  # a model dropped from the cache is not kept alive
    attribution.clear_cache()


# ------------------------------------------------------------------ the model untouched
def fussy_model() -> nn.Module:
    """Train mode with BatchNorm, a frozen parameter, a user's hook and a stored grad."""
    m = small_cnn(bn=True).train()
    m[0].bias.requires_grad_(False)
    m[3].register_forward_hook(lambda mod, i, o: None)
    m[9].weight.grad = torch.ones_like(m[9].weight)
    return m


def skip_unavailable(method: str) -> None:
    engine = attribution.PATHWAY_METHODS.get(method)
    if engine is not None and engine not in ENGINE_METHODS:
        pytest.skip(f"the engine has no {engine!r} method yet")


@pytest.mark.parametrize("method", list(cw.ATTRIBUTION_METHODS))
def test_model_state_unchanged(method):
    skip_unavailable(method)
    m = fussy_model()
    x = inputs()
    before = ref.model_state(m)
    opts = {"steps": 2} if method == "pathway_intgrad" else {}
    a = cw.attribute(m, x, method, **opts)
    ref.assert_same_state(before, ref.model_state(m))
    assert a.shape == x.shape


class Raises(nn.Module):
    """Raises in forward when the input requires grad: our own target pass succeeds, the
    Captum pass fails after Captum has set its hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn(bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("boom")
        return self.net(x)


@pytest.mark.parametrize("method", list(cw.ATTRIBUTION_METHODS))
def test_model_state_unchanged_after_raise(method):
    skip_unavailable(method)
    m = Raises().train()
    before = ref.model_state(m)
    # the model's own error, or ours (chained) from the engine and where Captum's hooks
    # were involved
    ours = method in attribution.PATHWAY_METHODS or method in ("guided_backprop", "deeplift")
    error = ModelError if ours else RuntimeError
    with pytest.raises(error, match="boom"):
        cw.attribute(m, inputs(), method)
    ref.assert_same_state(before, ref.model_state(m))


# ------------------------------------------------------------------ errors
def test_errors(cnn):
    x = inputs()
    with pytest.raises(OptionError, match="unknown attribution method"):
        cw.attribute(cnn, x, "lrp")
    for method in ("gradient", "pathway_mct"):
        with pytest.raises(InputError):
            cw.attribute(cnn, x[0], method)
    with pytest.raises(OptionError, match="n_steps"):
        cw.attribute(cnn, x, "gradient", n_steps=3)
    with pytest.raises(InputError, match="out of range"):
        cw.attribute(cnn, x, "gradient", 10)


# ------------------------------------------------------------------ Quantus
def test_quantus_explain_func():
    quantus = pytest.importorskip("quantus")
    m = small_cnn(torch.float32).eval()
    x = inputs(torch.float32, n=3).numpy()
    y = m(torch.from_numpy(x)).argmax(1).numpy()
    a = cw.quantus_explain(model=m, inputs=x, targets=y, method="gradient", device="cpu")
    assert isinstance(a, np.ndarray) and a.shape == x.shape
    for method in ("gradient", "pathway_mct"):
        scores = quantus.RandomLogit(num_classes=10, disable_warnings=True)(
            model=m,
            x_batch=x,
            y_batch=y,
            a_batch=None,
            explain_func=cw.quantus_explain,
            explain_func_kwargs={"method": method},
        )
        assert len(scores) == 3 and np.isfinite(scores).all()
    with pytest.raises(OptionError, match="needs a method"):
        cw.quantus_explain(m, x, y)


def test_attribution_imports_no_widget_library():
    import subprocess
    import sys

    code = (
        "import sys, torch, critpath_widgets as c; from torch import nn; "
        "m = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)); "
        "c.attribute(m, torch.randn(1, 3, 4, 4), 'gradient'); "
        "c.attribute(m, torch.randn(1, 3, 4, 4), 'pathway_mct'); "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('ipywidgets', 'anywidget', "
        "'bqplot', 'quantus')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_guided_backprop_sees_relu6_networks():
    """Captum's guided backprop rewrites nn.ReLU only: on a ReLU6 network it must not
    silently be the plain gradient. The ReLU6 copy split into ReLU + clamp gives what
    Captum gives on the same network built with ReLU + clamp."""
    from captum.attr import GuidedBackprop

    torch.manual_seed(0)

    def net(act):
        return (
            nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1),
                act(),
                nn.Conv2d(6, 6, 3, padding=1),
                act(),
                nn.Flatten(),
                nn.Linear(6 * 8 * 8, 4),
            )
            .double()
            .eval()
        )

    relu6 = net(nn.ReLU6)
    split = net(lambda: nn.Sequential(nn.ReLU(), nn.Hardtanh(0.0, 6.0)))
    split.load_state_dict(relu6.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 3
    before = ref.model_state(relu6)
    got = cw.attribute(relu6, x, "guided_backprop", target=1)
    want = GuidedBackprop(split).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, cw.attribute(relu6, x, "gradient", target=1))
    ref.assert_same_state(before, ref.model_state(relu6))
