"""LayerContributions: bars per site, kept <= total, site selection, channel chart, map."""

from __future__ import annotations

import bqplot as bq
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
import traitlets

from critpath_widgets import AttributionOverlay, LayerContributions, PathwayExplainer
from critpath_widgets.widgets.layers import NO_SITE_LABEL, NO_SITE_TITLE


def _hooks_empty(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x64():
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


@pytest.fixture(scope="module")
def explanation(resnet, x64):
    return PathwayExplainer(resnet).explain(x64, sparsity=0.7)


@pytest.fixture(scope="module")
def image64():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _bars(w: LayerContributions) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(w.bars.y, dtype=np.float64)
    return np.asarray(w.bars.x), y


def test_one_bar_per_site_and_kept_le_total(explanation, image64):
    w = LayerContributions(explanation, image64)
    summary = explanation.layer_summary()
    n_sites = len(explanation.pathway.masks)
    x, y = _bars(w)
    assert len(summary) == n_sites
    assert len(x) == n_sites and y.shape == (2, n_sites)
    assert y.dtype == np.float64  # numpy arrays: bqplot sends binary buffers
    kept, rest = y
    total = kept + rest
    assert np.all(kept >= 0) and np.all(rest >= 0)
    assert np.all(kept <= total + 1e-9)
    np.testing.assert_allclose(kept, [s.kept_total for s in summary], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(total, [s.total for s in summary], rtol=1e-5, atol=1e-6)
    for s in summary:
        assert 0 <= s.kept <= s.neurons
    assert w.selected_site == -1
    assert "critpath-layer-chart" in w.layer_figure._dom_classes
    assert isinstance(w.overlay, AttributionOverlay)
    assert w.overlay.sign == "absolute" and w.overlay.colormap == "inferno"
    assert len(w.channel_data()["values"]) == 0


def test_selecting_a_site_fills_channels_and_map(explanation, image64):
    w = LayerContributions(explanation, image64)
    i = 3
    w.selected_site = i
    assert list(np.asarray(w.bars.selected)) == [i]
    data = w.channel_data()
    summary = explanation.layer_summary()[i]
    c = summary.shape[0]
    assert len(data["values"]) == min(c, 256)
    # sorted in descending order, and they are the site's channel totals
    assert np.all(np.diff(data["values"]) <= 1e-12)
    ch_total = summary.channel_total.detach().numpy()
    np.testing.assert_allclose(data["values"], ch_total[data["channels"]], rtol=1e-6)
    # pathway channels = those with a kept neuron
    mask = explanation.pathway.masks[i][0]
    in_path = mask.reshape(mask.shape[0], -1).any(1).numpy()
    np.testing.assert_array_equal(data["pathway"], in_path[data["channels"]])
    # the two stacked rows split the bars by colour
    y = np.asarray(w.channel_bars.y)
    assert y.shape == (2, len(data["values"]))
    assert np.all((y[0] == 0) | (y[1] == 0))
    # the overlay shows the site map
    site_map = explanation.site_map(i).detach().float().numpy()
    assert tuple(w.overlay.shape) == site_map.shape
    np.testing.assert_allclose(w.overlay.array, site_map, rtol=1e-6)
    assert w.overlay.image[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"site {i}" in w.details.value and "kept" in w.details.value
    # deselect
    w.selected_site = -1
    assert w.bars.selected is None or len(w.bars.selected) == 0
    assert len(w.channel_data()["values"]) == 0
    assert w.overlay.values == b""


def test_click_from_front_end_selects(explanation, image64):
    w = LayerContributions(explanation, image64)
    # what bqplot's front end sends on a click in a site's column (the hit bars take it)
    w.hit_bars.set_state({"selected": [5]})
    assert w.selected_site == 5
    assert list(np.asarray(w.bars.selected)) == [5]  # the visible bars show it too
    assert len(w.channel_data()["values"]) > 0
    w.hit_bars.selected = [2, 6]  # multi-selection collapses to the last site
    assert w.selected_site == 6
    assert list(np.asarray(w.hit_bars.selected)) == [6]
    assert list(np.asarray(w.bars.selected)) == [6]


def test_click_outside_the_columns_keeps_the_selection(explanation, image64):
    """bqplot deselects on a click in empty chart space (selected None); the panel keeps
    the site, and both marks say so again (no empty channel chart, no stale caption)."""
    w = LayerContributions(explanation, image64)
    w.hit_bars.set_state({"selected": [3]})
    before = (w.details.value, w.overlay.label, w.channel_figure.title)
    for empty in (None, []):
        w.hit_bars.set_state({"selected": empty})
        assert w.selected_site == 3
        assert list(np.asarray(w.hit_bars.selected)) == [3]
        assert list(np.asarray(w.bars.selected)) == [3]
        assert (w.details.value, w.overlay.label, w.channel_figure.title) == before
        assert len(w.channel_data()["values"]) > 0


def test_deselect_from_python_clears_everything(explanation, image64):
    w = LayerContributions(explanation, image64)
    w.selected_site = 3
    label = explanation.layer_summary()[3].label
    assert label in w.overlay.label and label in w.channel_figure.title
    w.selected_site = -1
    assert w.hit_bars.selected is None and w.bars.selected is None
    assert len(w.channel_data()["values"]) == 0
    assert len(np.asarray(w.channel_bars.x)) == 0
    # no ticks on the empty channel chart (its empty scale would tick "0 0 1 1 1")
    assert not any(axis.visible for axis in w.channel_figure.axes)
    assert w.overlay.label == NO_SITE_LABEL and w.channel_figure.title == NO_SITE_TITLE
    assert label not in w.channel_figure.title and label not in w.details.value
    assert w.overlay.values == b""
    w.selected_site = 2  # and the channel chart ticks itself again
    assert all(axis.visible for axis in w.channel_figure.axes)


def test_every_column_can_be_hit(explanation):
    """One hit bar per site, as tall as the chart (the largest site), without gaps."""
    w = LayerContributions(explanation)
    totals = np.array([s.total for s in explanation.layer_summary()])
    hits = np.asarray(w.hit_bars.y, dtype=np.float64)
    assert list(w.hit_bars.x) == list(w.bars.x)
    assert hits.shape == totals.shape
    np.testing.assert_allclose(hits, totals.max())
    assert w.hit_bars.padding == 0 and w.hit_bars.interactions["click"] == "select"
    assert "click" not in w.bars.interactions  # the visible bars leave clicks to them
    assert w.hit_bars.opacities == [0.0]


def _shown_heights(bars) -> tuple[np.ndarray, np.ndarray]:
    """Top of the kept part and of the bar, as bqplot stacks rows from ``base``."""
    y = np.asarray(bars.y, dtype=np.float64)
    base = float(bars.base)
    return y[0], base + (y[0] - base) + (y[1] - base)


def test_log_scale_shows_the_same_bars_from_a_floor(explanation):
    w = LayerContributions(explanation)
    summary = explanation.layer_summary()
    kept = np.array([max(s.kept_total, 0.0) for s in summary])
    total = np.array([s.total for s in summary])
    w.log_toggle.value = True  # the toggle drives the trait
    assert w.log_scale
    assert isinstance(w.bars.scales["y"], bq.LogScale)
    assert w.layer_figure.marks == [w.bars, w.hit_bars]  # the log view's marks on show
    assert w.hit_bars.scales["y"] is w.bars.scales["y"]
    floor = float(w.bars.base)
    assert 0 < floor < total[total > 0].min()
    kept_top, top = _shown_heights(w.bars)
    np.testing.assert_allclose(top, np.maximum(total, floor), rtol=1e-9)
    np.testing.assert_allclose(kept_top, np.clip(kept, floor, np.maximum(total, floor)))
    assert float(w.hit_bars.base) == floor
    np.testing.assert_allclose(np.asarray(w.hit_bars.y), top.max())
    w.log_scale = False
    assert not w.log_toggle.value and float(w.bars.base) == 0.0
    kept_top, top = _shown_heights(w.bars)
    np.testing.assert_allclose(top, total, rtol=1e-6, atol=1e-9)


def test_hover_tooltip_text(explanation):
    w = LayerContributions(explanation)
    w._on_bar_hover(w.hit_bars, {"event": "hover", "data": {"index": 1}})
    s = explanation.layer_summary()[1]
    assert f"{s.kept:,} / {s.neurons:,}" in w._bar_tip.value
    assert s.label in w._bar_tip.value and s.name in w._bar_tip.value
    w.selected_site = 1
    w._on_channel_hover(w.channel_bars, {"event": "hover", "data": {"index": 0}})
    assert "channel" in w._channel_tip.value


def test_invalid_selection_rejected(explanation):
    w = LayerContributions(explanation)
    n = len(explanation.layer_summary())
    with pytest.raises(traitlets.TraitError):
        w.selected_site = n
    with pytest.raises(traitlets.TraitError):
        w.selected_site = -2
    assert w.selected_site == -1


def test_update_keeps_selection_and_empty_state(resnet, x64, explanation, image64):
    w = LayerContributions()
    assert len(_bars(w)[0]) == 0
    w.update(explanation, image64)
    w.selected_site = 4
    before = w.channel_data()["pathway"].sum()
    denser = explanation.at_sparsity(0.2)
    w.update(denser)
    assert w.selected_site == 4
    assert w.explanation is denser
    after = w.channel_data()["pathway"].sum()
    assert after >= before
    x, y = _bars(w)
    np.testing.assert_allclose(y[0], [s.kept_total for s in denser.layer_summary()], rtol=1e-6)
    w.update(None)
    assert w.selected_site == -1 and len(_bars(w)[0]) == 0
    assert _hooks_empty(resnet)


def test_linear_site_has_channels_but_no_map():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(96, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    ).eval()
    e = PathwayExplainer(model).explain(torch.randn(1, 3, 16, 16), sparsity=0.5)
    w = LayerContributions(e, np.zeros((16, 16, 3), np.uint8))
    assert len(_bars(w)[0]) == 2
    w.selected_site = 1
    data = w.channel_data()
    assert len(data["values"]) == 12
    assert np.all(np.diff(data["values"]) <= 1e-12)
    assert w.overlay.values == b""
    assert "no spatial map" in w.overlay.message
    w.selected_site = 0
    assert tuple(w.overlay.shape) == (16, 16)
    assert w.overlay.message == ""


def test_site_is_named_as_people_read_it():
    """A site says what it is and where (module type, or the function called in
    forward, and its block), since its module path may not (EfficientNet-Lite0 keeps
    ReLU6 modules as ``_swish``); the path is still there."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self._swish = torch.nn.ReLU6()
            self.fc = torch.nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self._swish(self.conv(x))).flatten(1))

    e = PathwayExplainer(Net()).explain(torch.randn(1, 3, 8, 8))
    summary = e.layer_summary()
    assert [s.kind for s in summary] == e.site_kinds == ["ReLU6", "F.relu"]
    assert [s.label for s in summary] == ["ReLU6", "F.relu"]  # no blocks: kinds alone
    w = LayerContributions(e)
    assert list(w.bars.x) == ["ReLU6", "F.relu"]
    w._on_bar_hover(w.hit_bars, {"event": "hover", "data": {"index": 0}})
    assert "<b>ReLU6</b> (site 0)" in w._bar_tip.value and "_swish" in w._bar_tip.value
    w.selected_site = 1
    assert "<b>F.relu</b> (site 1, <code>F.relu</code>" in w.details.value
    assert w.overlay.label == "F.relu map"


def test_chart_is_labelled_by_site_names(explanation):
    w = LayerContributions(explanation)
    labels = [s.label for s in explanation.layer_summary()]
    assert list(w.bars.x) == labels and len(set(labels)) == len(labels)
    assert labels[0] == "stem · ReLU" and labels[1] == "block 0 · ReLU #1"
    assert 2 <= w._chart.x_axis.num_ticks < len(labels)  # thinned, not 17 overlapping
