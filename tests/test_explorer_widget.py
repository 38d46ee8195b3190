"""PathwayExplorer with a faked front end: trait/control sync, worker, cache, coalescing,
stale results, cancellation, error display, model left untouched, figure export.

Most tests use a small random-init torchvision ResNet-18 at 64 x 64; one (slow) opens
the offline default (EfficientNet-Lite0) on the sample photo.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
import traitlets
from PIL import Image

import critpath_widgets
from critpath_widgets import Cancelled, ModelError, PathwayExplorer
from critpath_widgets.widgets.explorer.view import OTHER_PICTURE

TIMEOUT = 120


# ----------------------------------------------------------------------------- helpers
def _preprocess(im: Image.Image) -> torch.Tensor:
    arr = np.array(im.convert("RGB").resize((64, 64)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _photo(seed: int = 0, size=(96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _upload_state(data: bytes, name: str = "photo.png") -> dict:
    """The state a browser FileUpload sends after the user picked a file."""
    return {
        "value": [
            {
                "name": name,
                "type": "image/png",
                "size": len(data),
                "content": memoryview(data),
                "last_modified": 1_700_000_000_000,
            }
        ]
    }


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _overlay_array(ov) -> np.ndarray:
    return ov.array


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def explorer(model, snapshot):
    w = PathwayExplorer(
        model,
        image=_photo(0),
        preprocess=_preprocess,
        categories=[f"class{i}" for i in range(10)],
        steps=4,
    )
    assert w.wait(timeout=TIMEOUT)
    assert w.explanation is not None, w.message_text
    yield w
    w.close()
    # After every interaction and error: no hooks left, parameters unchanged.
    assert _hook_count(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


class _Gate:
    """Blocks a patched method on its first ``n`` calls until released."""

    def __init__(self, n: int = 1):
        self.n = n
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def wrap(self, fn):
        def wrapper(*args, **kwargs):
            self.calls += 1
            self.threads.append(threading.current_thread())
            if self.calls <= self.n:
                self.entered.set()
                assert self.release.wait(TIMEOUT)
            return fn(*args, **kwargs)

        return wrapper


# ------------------------------------------------------------------------------ tests
def test_initial_view_and_test_hooks(explorer):
    w = explorer
    e = w.explanation
    assert (e.method, e.scope) == (w.method, w.scope) == ("neuron_mct", "global")
    assert float(e.sparsity) == pytest.approx(w.sparsity) == pytest.approx(0.7)
    assert int(e.target[0]) == w.target == int(e.logits[0].argmax())
    # target picker: the top-5 classes with probabilities first, then every other class
    opts = list(w.target_picker.options)
    n = e.logits.shape[1]
    assert len(opts) == n and all("%" in label for label in opts[:5])
    assert not any("%" in label for label in opts[5:])
    probs = torch.softmax(e.logits[0], 0)
    top = probs.argsort(descending=True)[:5].tolist()
    assert [w.picked_target(label) for label in opts[:5]] == top
    assert sorted(w.picked_target(label) for label in opts) == list(range(n))
    assert w.picked_target(w.target_picker.value) == w.target
    # panels show the pathway gradient and the plain gradient
    sal = e.saliency_map("max_abs")[0].detach().numpy()
    np.testing.assert_allclose(_overlay_array(w.pathway_overlay), sal, rtol=1e-6)
    grad = w.explainer.gradient(e.inputs, target=w.target)[0]
    gmap = grad.gather(0, grad.abs().argmax(0, keepdim=True))[0].numpy()
    np.testing.assert_allclose(_overlay_array(w.gradient_overlay), gmap, rtol=1e-5, atol=1e-8)
    assert w.pathway_overlay.image[:4] == b"\x89PNG"
    assert len(np.asarray(w.layers.bars.x)) == len(e.pathway.masks)
    # CSS hooks for the browser tests
    assert "critpath-explorer" in w._dom_classes
    assert "critpath-sparsity" in w.sparsity_slider._dom_classes
    assert "critpath-pathway-overlay" in w.pathway_overlay._dom_classes
    assert "critpath-gradient-overlay" in w.gradient_overlay._dom_classes
    assert "critpath-layer-chart" in w.layers.layer_figure._dom_classes
    assert "critpath-message" in w.message._dom_classes
    assert w.sparsity_slider.continuous_update
    assert (w.sparsity_slider.min, w.sparsity_slider.max, w.sparsity_slider.step) == (0, 0.99, 0.01)
    assert "class" in w.message_text and w.last_error is None


def test_traits_and_controls_sync_both_ways(explorer):
    w = explorer
    # Python -> controls
    w.sparsity = 0.5
    assert w.sparsity_slider.value == 0.5
    w.scope = "layer"
    assert w.scope_buttons.value == "layer"
    w.method = "random"
    assert w.method_picker.value == "random"
    w.wait(TIMEOUT)
    e = w.explanation
    assert (e.method, e.scope, float(e.sparsity)) == ("random", "layer", pytest.approx(0.5))
    # controls (as the browser sets them) -> traits -> view
    w.sparsity_slider.set_state({"value": 0.3})
    assert w.sparsity == 0.3
    w.scope_buttons.set_state({"index": 0})
    assert w.scope == "global"
    idx = [v for _, v in w.method_picker.options].index("neuron_mct")
    w.method_picker.set_state({"index": idx})
    assert w.method == "neuron_mct"
    w.target_picker.set_state({"value": w.target_picker.options[2]})
    picked = w.picked_target(w.target_picker.options[2])
    assert w.target == picked
    w.wait(TIMEOUT)
    e = w.explanation
    assert (e.method, e.scope, float(e.sparsity)) == ("neuron_mct", "global", pytest.approx(0.3))
    assert int(e.target[0]) == picked
    np.testing.assert_allclose(
        _overlay_array(w.pathway_overlay), e.saliency_map()[0].detach().numpy(), rtol=1e-6
    )
    # a target outside the top 5 shows its label in the picker
    top = {w.picked_target(label) for label in w.target_picker.options[:5]}
    outside = next(i for i in range(10) if i not in top)
    w.target = outside
    assert w.picked_target(w.target_picker.value) == outside
    w.wait(TIMEOUT)
    assert int(w.explanation.target[0]) == outside
    assert "class" in w.gradient_overlay.label


def test_invalid_trait_values_rejected(explorer):
    w = explorer
    e = w.explanation
    with pytest.raises(traitlets.TraitError):
        w.method = "bogus"
    with pytest.raises(traitlets.TraitError):
        w.sparsity = 1.5
    with pytest.raises(traitlets.TraitError):
        w.target = 10
    with pytest.raises(traitlets.TraitError):
        w.scope = "channel"
    w.wait(TIMEOUT)
    assert w.explanation is e


def test_sparsity_change_uses_cached_scores(explorer, monkeypatch):
    w = explorer
    calls = {"explain": 0, "at_sparsity": 0}
    explain = w.explainer.explain
    at_sparsity = type(w.explanation).at_sparsity

    def spy_explain(*a, **k):
        calls["explain"] += 1
        return explain(*a, **k)

    def spy_at(self, s):
        calls["at_sparsity"] += 1
        return at_sparsity(self, s)

    monkeypatch.setattr(w.explainer, "explain", spy_explain)
    monkeypatch.setattr(type(w.explanation), "at_sparsity", spy_at)
    for s in (0.2, 0.4, 0.9, 0.95):
        w.sparsity = s
        w.wait(TIMEOUT)
        assert float(w.explanation.sparsity) == pytest.approx(s)
        assert f"{s:.2f}" in w.pathway_overlay.label
    assert calls == {"explain": 0, "at_sparsity": 4}
    # another method scores again; coming back to the first is served from the cache
    w.method = "random"
    w.wait(TIMEOUT)
    assert calls["explain"] == 1
    w.method = "neuron_mct"
    w.wait(TIMEOUT)
    assert calls["explain"] == 1
    assert w.explanation.method == "neuron_mct"


def test_coalescing_and_stale_results_dropped(explorer, monkeypatch):
    w = explorer
    gate = _Gate(n=1)
    cls = type(w.explanation)
    monkeypatch.setattr(cls, "at_sparsity", gate.wrap(cls.at_sparsity))
    shown_before = w.stats["shown"]
    shown = []
    update = w.layers.update

    def spy_update(e, image=None):
        shown.append(float(e.sparsity))
        return update(e, image)

    monkeypatch.setattr(w.layers, "update", spy_update)
    values = [round(0.40 + 0.01 * i, 2) for i in range(20)]
    w.sparsity = values[0]
    assert gate.entered.wait(TIMEOUT)  # the worker is now busy with the first one
    for s in values[1:]:
        w.sparsity = s
    with pytest.raises(TimeoutError):
        w.wait(timeout=0.05)
    assert w.busy
    gate.release.set()
    assert w.wait(TIMEOUT)
    assert gate.calls <= 2
    assert float(w.explanation.sparsity) == pytest.approx(values[-1])
    assert shown == [values[-1]]  # the stale first result was never shown
    assert w.stats["shown"] == shown_before + 1
    assert f"{values[-1]:.2f}" in w.pathway_overlay.label
    np.testing.assert_allclose(
        _overlay_array(w.pathway_overlay),
        w.explanation.saliency_map()[0].detach().numpy(),
        rtol=1e-6,
    )
    # the work ran in the worker thread, never on the caller's
    assert all(t is not threading.current_thread() for t in gate.threads)
    assert all(t.daemon for t in gate.threads)


def test_stale_result_of_another_method_dropped(explorer, monkeypatch):
    w = explorer
    gate = _Gate(n=1)
    monkeypatch.setattr(w.explainer, "explain", gate.wrap(w.explainer.explain))
    w.method = "random"
    assert gate.entered.wait(TIMEOUT)
    w.scope = "layer"  # newer request while "random/global" is running
    gate.release.set()
    w.wait(TIMEOUT)
    e = w.explanation
    assert (e.method, e.scope) == ("random", "layer")
    assert gate.calls == 2


@pytest.mark.slow
def test_cancel_long_method_then_keep_working(explorer, monkeypatch):
    w = explorer
    before = w.explanation
    explain = w.explainer.explain
    entered, proceed = threading.Event(), threading.Event()
    seen = {}

    def gated(*a, progress=None, **k):
        seen["progress"] = progress
        if k.get("method") == "neuron_intgrad" and not entered.is_set():
            entered.set()
            assert proceed.wait(TIMEOUT)
        return explain(*a, progress=progress, **k)

    monkeypatch.setattr(w.explainer, "explain", gated)
    w.method = "neuron_intgrad"
    assert entered.wait(TIMEOUT)
    assert w.progress_box.layout.display != "none"
    assert not w.cancel_button.disabled
    w.cancel_button.click()
    proceed.set()
    w.wait(TIMEOUT)
    assert isinstance(w.last_error, Cancelled)
    assert "cancelled" in w.message_text.lower()
    assert w.explanation is before
    assert callable(seen["progress"])
    # the controls are back to what is on show, and still work
    assert w.method == w.method_picker.value == before.method
    assert w.progress_box.layout.display == "none"
    w.sparsity = 0.6
    w.wait(TIMEOUT)
    assert w.last_error is None and float(w.explanation.sparsity) == pytest.approx(0.6)
    # without cancelling, the long method completes and the progress bar moved
    w.method = "neuron_intgrad"
    w.wait(TIMEOUT)
    assert w.explanation.method == "neuron_intgrad", w.message_text
    assert w.progress.value == w.progress.max


@pytest.mark.slow
def test_long_method_superseded_by_other_request(explorer, monkeypatch):
    w = explorer
    explain = w.explainer.explain
    entered, proceed = threading.Event(), threading.Event()

    def gated(*a, progress=None, **k):
        if k.get("method") == "neuron_intgrad":
            entered.set()
            assert proceed.wait(TIMEOUT)
        return explain(*a, progress=progress, **k)

    monkeypatch.setattr(w.explainer, "explain", gated)
    w.method = "neuron_intgrad"
    assert entered.wait(TIMEOUT)
    w.method = "random"
    proceed.set()
    w.wait(TIMEOUT)
    assert w.explanation.method == "random"
    assert w.last_error is None
    assert "cancel" not in w.message_text.lower()


def test_bad_uploads_show_message_and_keep_view(explorer, monkeypatch):
    w = explorer
    before = w.explanation
    image_before = w.pathway_overlay.image
    for data, words in [
        (b"this is not an image", "not an image"),
        (_png(_photo(3))[:200], "corrupt|truncated|could not"),
    ]:
        w.upload.set_state(_upload_state(data))
        w.wait(TIMEOUT)
        assert w.explanation is before
        assert w.last_error is not None
        assert any(word in w.message_text for word in words.split("|")), w.message_text
        assert "error" in w.message.value.lower()
        assert w.pathway_overlay.image == image_before
    # decompression bomb
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    w.upload.set_state(_upload_state(_png(_photo(4, (100, 100)))))
    w.wait(TIMEOUT)
    assert "too large" in w.message_text
    monkeypatch.undo()
    # the previous view is still usable
    w.sparsity = 0.55
    w.wait(TIMEOUT)
    assert w.last_error is None
    assert float(w.explanation.sparsity) == pytest.approx(0.55)
    # an odd but valid upload (16-bit grayscale PNG) becomes the new picture
    arr16 = (np.linspace(0, 65535, 90 * 70).reshape(70, 90)).astype(np.uint16)
    w.upload.set_state(_upload_state(_png(Image.fromarray(arr16)), "gray16.png"))
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    assert w.pathway_overlay.image != image_before
    # the upload control counts the file on show; the photo picker names it
    assert [f["name"] for f in w.upload.value] == ["gray16.png"]
    assert w.photo_picker.label == "uploaded: gray16.png"
    assert int(w.explanation.target[0]) == w.target == int(w.explanation.logits[0].argmax())


def test_sample_photo_dropdown_and_set_image(explorer):
    w = explorer
    names = [v for _, v in w.photo_picker.options if v != OTHER_PICTURE]
    assert names == critpath_widgets.sample_images()
    first = w.explanation
    w.photo_picker.set_state({"index": 1})
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    assert w.explanation is not first
    img = w.pathway_overlay.image
    w.set_image(np.zeros((50, 60, 4), dtype=np.uint8))  # RGBA array
    w.wait(TIMEOUT)
    assert w.last_error is None and w.pathway_overlay.image != img
    assert w.photo_picker.label == "picture from Python"


def test_tensor_image_without_preprocess(model):
    torch.manual_seed(2)
    x = torch.randn(3, 64, 64)
    w = PathwayExplorer(model, image=x, sparsity=0.8, method="random")
    try:
        w.wait(TIMEOUT)
        assert w.last_error is None, w.message_text
        assert w.photo_picker.disabled and w.upload.disabled
        e = w.explanation
        assert (e.method, float(e.sparsity)) == ("random", pytest.approx(0.8))
        assert w.category(3) == "class 3"
        assert w.target_picker.options[0].startswith("class ")
    finally:
        w.close()
    with pytest.raises(critpath_widgets.InputError, match="preprocess"):
        PathwayExplorer(model, image=_photo(1))


def test_model_without_sites_shows_error():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    w = PathwayExplorer(model, image=torch.randn(1, 3, 32, 32))
    try:
        w.wait(TIMEOUT)
        assert isinstance(w.last_error, ModelError)
        assert "error" in w.message.value.lower()
        assert w.message_text and w.explanation is None
        w.sparsity = 0.5  # still answers, with the same message
        w.wait(TIMEOUT)
        assert isinstance(w.last_error, ModelError)
    finally:
        w.close()
    assert _hook_count(model) == 0
    assert all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def test_target_out_of_range_before_image_is_ready_shows_error(model):
    w = PathwayExplorer(model, image=_photo(5), preprocess=_preprocess, target=42)
    try:
        w.wait(TIMEOUT)
        assert w.last_error is not None and "target" in w.message_text
        w.target = 1
        w.wait(TIMEOUT)
        assert w.last_error is None and int(w.explanation.target[0]) == 1
    finally:
        w.close()


@pytest.mark.slow
def test_save_figure(explorer, tmp_path):
    w = explorer
    w.layers.selected_site = 2
    out = w.save(tmp_path / "view.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    im = Image.open(io.BytesIO(data))
    assert im.size[0] > 800
    svg = w.save(tmp_path / "view.svg")
    assert b"<svg" in svg.read_bytes()[:500]


def test_wait_timeout_and_close(model):
    w = PathwayExplorer(model, image=_photo(6), preprocess=_preprocess)
    gate = _Gate(n=1)
    try:
        w.wait(TIMEOUT)
        w.explainer.explain = gate.wrap(w.explainer.explain)
        w.method = "random"
        assert gate.entered.wait(TIMEOUT)
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            w.wait(timeout=0.1)
        assert time.perf_counter() - t0 < 5
        (worker,) = set(gate.threads)  # the thread that runs the requests
    finally:
        gate.release.set()
        w.close()
    worker.join(10)
    assert not worker.is_alive()


@pytest.mark.slow
def test_default_explorer_on_sample_photo():
    w = PathwayExplorer()
    try:
        w.wait(timeout=300)
        assert w.last_error is None, w.message_text
        assert w.photo_picker.value == "coffee"
        assert w.category(w.target) == "espresso"
        assert tuple(w.pathway_overlay.shape) == (224, 224)
        assert tuple(w.gradient_overlay.shape) == (224, 224)
        n_sites = len(w.explanation.pathway.masks)
        assert len(np.asarray(w.layers.bars.x)) == n_sites
        w.sparsity = 0.9
        w.wait(timeout=120)
        assert float(w.explanation.sparsity) == pytest.approx(0.9)
        assert _hook_count(w.model) == 0
    finally:
        w.close()


def test_idle_worker_exits_and_restarts(model, monkeypatch):
    from critpath_widgets.widgets.explorer import worker as worker_module

    monkeypatch.setattr(worker_module, "WORKER_IDLE_EXIT_S", 0.2)
    w = PathwayExplorer(model, image=_photo(7), preprocess=_preprocess)
    try:
        w.wait(TIMEOUT)
        cls = type(w.explanation)
        threads = []
        at_sparsity = cls.at_sparsity

        def spy(self, s):
            threads.append(threading.current_thread())
            return at_sparsity(self, s)

        monkeypatch.setattr(cls, "at_sparsity", spy)
        w.sparsity = 0.5
        w.wait(TIMEOUT)
        first = threads[-1]
        first.join(10)  # exits once idle
        assert not first.is_alive()
        w.sparsity = 0.4
        w.wait(TIMEOUT)
        assert float(w.explanation.sparsity) == pytest.approx(0.4)
        assert threads[-1] is not first and threads[-1].daemon
    finally:
        w.close()


@pytest.mark.slow
def test_greedy_reports_progress_and_completes(explorer):
    w = explorer
    seen = []
    w.progress.observe(lambda ch: seen.append(ch["new"]), "value")
    w.sparsity = 0.3
    w.method = "greedy"
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    e = w.explanation
    assert (e.method, float(e.sparsity)) == ("greedy", pytest.approx(0.3))
    assert seen, "the progress bar never moved"
    assert w.progress_box.layout.display == "none" and w.cancel_button.disabled


def test_blank_map_and_smooth_sites_are_explained_in_the_message():
    """A zero classifier head (torchvision's ViT default) gives a blank map: the message
    says why, and names the sites that are not piecewise linear."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    nn.init.zeros_(model[4].weight)
    w = PathwayExplorer(model, image=torch.randn(1, 3, 32, 32))
    try:
        w.wait(TIMEOUT)
        assert w.explanation is not None and not w.explanation.saliency.any()
        assert "does not depend on the input" in w.message_text
        assert "GELU are not piecewise linear" in w.message_text
    finally:
        w.close()


def test_dgr_runs_in_the_explorer_as_a_long_method(explorer):
    w = explorer
    w.method = "dgr"
    w.wait(TIMEOUT)
    assert w.explanation.method == "dgr", w.message_text
    assert w.last_error is None and w.progress.value == w.progress.max
