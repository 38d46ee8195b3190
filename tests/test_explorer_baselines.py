"""PathwayExplorer's baselines with a faked front end: each baseline's map equals
``attribute`` reduced like the pathway map, the sparsity and scope controls are off
while one is shown, results are cached, slow ones can be cancelled, DeepLift's error on
a ResNet is shown and the widget keeps working, the figure export and the user's model.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from critpath_widgets import Cancelled, ModelError, PathwayExplorer
from critpath_widgets.attribution import attribute
from critpath_widgets.engine import reduce_channels
from critpath_widgets.methods import BASELINES, method_name
from critpath_widgets.widgets.explorer import baselines as bl

from .reference import assert_same_state, model_state
from .test_explorer_widget import _photo, _preprocess

pytest.importorskip("captum")
TIMEOUT = 120
#: the slow baselines made quick for the tests (the widget passes these to attribute)
FAST_OPTIONS = {
    "integrated_gradients": {"n_steps": 6, "internal_batch_size": 2},
    "smoothgrad": {"nt_samples": 4, "nt_samples_batch_size": 2},
}


def small_cnn() -> nn.Module:
    """Every ReLU a module of its own, called once: DeepLift works on it."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


@pytest.fixture(autouse=True)
def fast_baselines(monkeypatch):
    monkeypatch.setattr(bl, "WIDGET_BASELINE_OPTIONS", FAST_OPTIONS)


def _reference(model: nn.Module, x: torch.Tensor, method: str, target: int) -> np.ndarray:
    """attribute(...) reduced as the explorer reduces the pathway map (max_abs)."""
    opts = FAST_OPTIONS.get(method, {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(bl.SMOOTHGRAD_SEED)
        a = attribute(model, x, method, target, **opts)
    return reduce_channels(a.float(), "max_abs", x.float())[0].numpy()


def _explorer(model: nn.Module) -> PathwayExplorer:
    w = PathwayExplorer(model, image=_photo(0), preprocess=_preprocess, steps=2)
    assert w.wait(TIMEOUT) and w.explanation is not None, w.message_text
    return w


def test_every_baseline_shows_attribute_reduced_like_the_pathway_map(tmp_path):
    model = small_cnn()
    before = model_state(model)
    w = _explorer(model)
    try:
        assert set(BASELINES) <= {v for _, v in w.method_picker.options}
        labels = dict((v, k) for k, v in w.method_picker.options)
        x = w._images.get(w._images.shown).x
        for method in BASELINES:
            w.method = method
            assert w.wait(TIMEOUT)
            assert w.last_error is None, (method, w.message_text)
            assert method_name(method) in labels[method]
            ref = _reference(model, x, method, w.target)
            np.testing.assert_allclose(w.pathway_overlay.array, ref, rtol=1e-5, atol=1e-7)
            # no pathway: controls off, panel says so, no stale explanation
            assert w.sparsity_slider.disabled and w.scope_buttons.disabled
            assert w.explanation is None and w.layers.summary == []
            assert "baseline" in w.layers.details.value and "no" in w.layers.details.value
            assert "baseline" in w.message_text
        # back on a pathway method: controls on, explanation and panel back
        w.method = "neuron_mct"
        w.wait(TIMEOUT)
        assert not w.sparsity_slider.disabled and not w.scope_buttons.disabled
        assert w.explanation is not None and w.layers.summary
        # cached per (image, target, method); a sparsity change does not recompute it
        n = w.stats["baseline"]
        w.method = "gradcam"
        w.wait(TIMEOUT)
        w.sparsity = 0.4
        w.wait(TIMEOUT)
        assert w.stats["baseline"] == n and w.last_error is None
        out = w.save(tmp_path / "gradcam.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        w.close()
    assert_same_state(before, model_state(model))


def test_deeplift_on_resnet_shows_the_error_and_keeps_working():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    before = model_state(model)
    w = _explorer(model)
    try:
        w.method = "deeplift"
        assert w.wait(TIMEOUT)
        assert isinstance(w.last_error, ModelError)
        assert "deeplift" in w.message_text.lower() and "previous result" in w.message_text
        w.method = "gradcam"
        w.wait(TIMEOUT)
        assert w.last_error is None and w.pathway_overlay.array.shape == (64, 64)
        w.method = "neuron_mct"
        w.wait(TIMEOUT)
        assert w.last_error is None and w.explanation is not None
        # the evaluation panel shows DeepLift's error too, and runs again without it
        p = w.evaluation
        p.compare.value = ("deeplift",)
        p.run_button.click()
        assert p.wait(TIMEOUT) and isinstance(p.last_error, ModelError)
        assert "Error" in p.message.value and not p.run_button.disabled
        p.compare.value = ("gradient",)
        p.steps.value = 4
        p.run_button.click()
        assert p.wait(TIMEOUT) and p.last_error is None, p.message.value
    finally:
        w.close()
    assert_same_state(before, model_state(model))


def test_slow_baseline_shows_progress_and_cancels(monkeypatch):
    model = small_cnn()
    w = _explorer(model)
    entered, proceed = threading.Event(), threading.Event()
    forward = bl.ProgressNet.forward

    def gated(self, x):
        if self._done == 2 and not entered.is_set():
            entered.set()
            assert proceed.wait(TIMEOUT)
        return forward(self, x)

    monkeypatch.setattr(bl.ProgressNet, "forward", gated)
    try:
        w.method = "integrated_gradients"
        assert entered.wait(TIMEOUT)
        assert w.progress_box.layout.display != "none" and not w.cancel_button.disabled
        w.cancel_button.click()
        proceed.set()
        w.wait(TIMEOUT)
        assert isinstance(w.last_error, Cancelled), w.message_text
        assert w.method == "neuron_mct" and not w.sparsity_slider.disabled
        # without cancelling it completes, the progress bar full
        w.method = "integrated_gradients"
        w.wait(TIMEOUT)
        assert w.last_error is None, w.message_text
        assert w.progress.value == w.progress.max == bl.forward_passes("integrated_gradients")
    finally:
        w.close()
