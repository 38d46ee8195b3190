"""The explorer's channel gallery with a faked front end: collapsed and idle until
opened; opened, the thumbnails equal ChannelGallery.top_patches and the map equals
activation_map for the selected site and its top channel; it follows the selected site,
the picked channel and a model change; a site without a spatial map shows the reason;
set_gallery takes a folder."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from critpath_widgets import InputError, PathwayExplainer, PathwayExplorer
from critpath_widgets.gallery import ChannelGallery, activation_map
from critpath_widgets.widgets.channel_gallery import TOP_K

from .reference import assert_same_state, model_state
from .test_explorer_baselines import small_cnn
from .test_explorer_widget import _photo, _preprocess

TIMEOUT = 120


def _open(model: nn.Module, **kwargs) -> PathwayExplorer:
    w = PathwayExplorer(model, image=_photo(0), preprocess=_preprocess, steps=2, **kwargs)
    assert w.wait(TIMEOUT) and w.explanation is not None, w.message_text
    return w


@pytest.fixture
def setup():
    model = small_cnn()
    before = model_state(model)
    w = _open(model)
    yield model, w
    w.close()
    assert_same_state(before, model_state(model))


def _settle(w) -> None:
    assert w.wait(TIMEOUT)
    assert w.gallery.wait(TIMEOUT), "the gallery did not finish"


def _check(model, w, images=None) -> None:
    """The panel shows what the engine finds for the selected site and picked channel."""
    p = w.gallery
    assert p.last_error is None, p.message.value
    s = w.layers.summary[w.layers.selected_site]
    assert p.shown == (s.name, p.channel)
    x = w._images.get(w._images.shown).x
    fresh = PathwayExplainer(model)
    want_map = activation_map(fresh, x, s.name, p.channel).numpy()
    np.testing.assert_allclose(p.map, want_map, rtol=1e-5, atol=1e-6)
    assert p.overlay.sign == "absolute" and p.overlay.image  # painted over the photo
    want = ChannelGallery(fresh, images, preprocess=_preprocess).top_patches(
        s.name, p.channel, TOP_K
    )
    assert [q.name for q in p.patches] == [q.name for q in want]
    np.testing.assert_allclose([q.value for q in p.patches], [q.value for q in want], rtol=1e-5)
    thumbs = p.thumbs.children
    assert len(thumbs) == len(want)
    for box, q in zip(thumbs, want, strict=True):
        image, caption = box.children
        assert Image.open(io.BytesIO(image.value)).size == q.image.size
        assert q.name in caption.value and f"{q.value:.3g}" in caption.value


def test_idle_until_opened_then_the_top_channel_of_the_selected_site(setup):
    model, w = setup
    p = w.gallery
    assert "critpath-gallery-section" in w.gallery_section._dom_classes
    assert w.gallery_section.selected_index is None
    assert not p.patches and not p.busy and p.picker.options == ()
    w.gallery_section.selected_index = 0
    _settle(w)
    s = w.layers.summary[w.layers.selected_site]
    kept = s.channel_kept.numpy()
    assert p.channel == int(np.argmax(kept))  # the largest kept contribution
    order = [v for _, v in p.picker.options]
    assert sorted(order) == list(range(len(kept)))
    top = list(np.argsort(-kept, kind="stable")[:5])
    assert order[:5] == top and "kept" in p.picker.options[0][0]
    assert len(p.thumbs.children) == TOP_K
    _check(model, w)


def test_follows_the_site_and_channel_while_open_not_while_closed(setup):
    model, w = setup
    p = w.gallery
    w.gallery_section.selected_index = 0
    _settle(w)
    first = p.shown
    other = 1 - w.layers.selected_site
    w.layers.selected_site = other
    _settle(w)
    assert p.shown[0] == w.layers.summary[other].name != first[0]
    assert p.channel == int(np.argmax(w.layers.summary[other].channel_kept.numpy()))
    _check(model, w)
    p.channel = (p.channel + 3) % len(p.picker.options)
    _settle(w)
    _check(model, w)
    picked = p.channel
    w.sparsity = 0.4  # a new result of the same site keeps the channel picked
    _settle(w)
    assert p.channel == picked
    _check(model, w)
    with pytest.raises(InputError):
        p.channel = 999
    # closed: nothing computed; opened again it catches up
    w.gallery_section.selected_index = None
    shown = p.shown
    w.layers.selected_site = 1 - other
    _settle(w)
    assert p.shown == shown
    w.gallery_section.selected_index = 0
    _settle(w)
    assert p.shown[0] == w.layers.summary[1 - other].name
    _check(model, w)


def test_a_model_change_drops_the_gallery(setup):
    model, w = setup
    p = w.gallery
    w.gallery_section.selected_index = 0
    _settle(w)
    before = [q.value for q in p.patches]
    gallery = p._gallery[1]
    saved = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(-1.5)
    try:
        w.refresh()
        _settle(w)
        assert p._gallery[1] is not gallery
        assert [q.value for q in p.patches] != pytest.approx(before)
        _check(model, w)
    finally:
        with torch.no_grad():
            model[0].weight.copy_(saved)


def test_a_site_without_a_map_shows_the_reason():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.ReLU(),
        nn.Linear(6, 10),
    ).eval()
    w = _open(model)
    try:
        p = w.gallery
        w.gallery_section.selected_index = 0
        names = [s.name for s in w.layers.summary]
        w.layers.selected_site = names.index("5")  # the ReLU of the feature vector
        _settle(w)
        assert isinstance(p.last_error, InputError) and not p.patches
        assert "no spatial map" in p.message.value
        w.layers.selected_site = names.index("1")
        _settle(w)
        _check(model, w)
    finally:
        w.close()


def test_set_gallery_with_a_folder(setup, tmp_path):
    model, w = setup
    rng = np.random.default_rng(1)
    for i in range(8):
        a = rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / f"pic{i}.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    w.gallery_section.selected_index = 0
    _settle(w)
    w.set_gallery(tmp_path)
    _settle(w)
    assert {q.name for q in w.gallery.patches} <= {f"pic{i}.png" for i in range(8)}
    _check(model, w, tmp_path)
    with pytest.raises(InputError):
        w.set_gallery(tmp_path / "missing")
    with pytest.raises(InputError):
        w.set_gallery([42])
    _check(model, w, tmp_path)  # a refused gallery leaves the one on show
    w.set_gallery()  # the sample photos again
    _settle(w)
    _check(model, w)


def test_computed_in_the_background_and_a_newer_pick_supersedes(setup, monkeypatch):
    from critpath_widgets.widgets import channel_gallery as cg

    model, w = setup
    p = w.gallery
    release = threading.Event()
    real = cg.activation_map

    def held(*args, **kwargs):
        release.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(cg, "activation_map", held)
    t0 = time.perf_counter()
    w.gallery_section.selected_index = 0  # returns at once: the kernel is not blocked
    assert time.perf_counter() - t0 < 1.0 and p.busy and p.shown is None
    assert "Computing" in p.message.value
    first = p._thread
    p.channel = (p.channel + 1) % len(p.picker.options)  # a newer pick while computing
    release.set()
    first.join(TIMEOUT)
    _settle(w)
    assert p.shown[1] == p.channel
    _check(model, w)
