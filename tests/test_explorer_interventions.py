"""PathwayExplorer interventions with a faked front end: a click on a channel bar (the
hit bars' ``selected``, as bqplot's front end sets it) cycles the channel, the shown map
is the engine's ``with_overrides`` result, Reset restores the view exactly, the trait
takes notebook values and refuses bad ones. A small random ResNet-18 at 64 x 64."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from critpath_widgets import PathwayExplorer
from critpath_widgets.errors import InputError
from critpath_widgets.widgets.channel_chart import AS_SELECTED, FORCED, REMOVED
from critpath_widgets.widgets.explorer.worker import Request

from . import small_explorer as small

TIMEOUT = 120


_preprocess = small.preprocess


_photo = small.photo


@pytest.fixture(scope="module")
def model():
    return small.resnet()


@pytest.fixture
def w(model):
    w = PathwayExplorer(model, _photo(), preprocess=_preprocess, sparsity=0.7)
    w.wait(TIMEOUT)
    w.layers.selected_site = len(w.explanation.site_names) - 2
    yield w
    w.close()


def _click(w: PathwayExplorer, rank: int) -> None:
    """What bqplot's front end does on a click on the channel bar of ``rank``."""
    w.layers.channel_hit_bars.set_state({"selected": [rank]})
    w.wait(TIMEOUT)


def _site(w: PathwayExplorer) -> str:
    return w.explanation.site_names[w.layers.selected_site]


def _map(w: PathwayExplorer) -> np.ndarray:
    return np.array(w.pathway_overlay.array, copy=True)


def _expected_map(e) -> np.ndarray:
    return e.saliency_map("max_abs")[0].detach().float().numpy()


def test_click_cycles_removed_forced_as_selected(w):
    site, channel = _site(w), int(w.layers.channel_data()["channels"][0])
    _click(w, 0)
    assert w.interventions == {"drop": {site: [channel]}, "keep": {}}
    assert w.layers.channel_states()[0] == REMOVED
    chart = w.layers._channels  # noqa: SLF001 - what the front end draws
    assert list(chart.markers[REMOVED].x) == [0.0] and len(chart.markers[FORCED].x) == 0
    assert np.asarray(chart.removed.y)[0] > 0 and not np.asarray(chart.removed.y)[1:].any()
    assert w.layers.channel_hit_bars.selected is None  # cleared: the same bar clicks again
    assert w.explanation.interventions.as_spec()["drop"] == {site: [channel]}
    _click(w, 0)
    assert w.interventions == {"drop": {}, "keep": {site: [channel]}}
    assert w.layers.channel_states()[0] == FORCED
    assert list(chart.markers[FORCED].x) == [0.0] and len(chart.markers[REMOVED].x) == 0
    _click(w, 0)
    assert w.interventions == {"drop": {}, "keep": {}}
    assert (w.layers.channel_states() == AS_SELECTED).all()
    assert not w.explanation.interventions


def test_map_and_top5_follow_the_engine_and_reset_restores(w):
    plain = w.explanation
    before, before_msg = _map(w), w.message_text
    site = _site(w)
    channels = [int(c) for c in w.layers.channel_data()["channels"][:3]]
    for rank in range(3):
        _click(w, rank)
    expected = plain.with_overrides(drop={site: channels})
    np.testing.assert_array_equal(_map(w), _expected_map(expected))
    assert not np.array_equal(_map(w), before)  # the map repainted
    torch.testing.assert_close(w.explanation.pathway_logits, expected.pathway_logits)
    restricted, full = w.interventions_panel.top_text()
    top = expected.top_classes(5)
    assert f"{w.category(top[0][0])} ({top[0][1]:.1%})" in restricted
    assert "full network (unchanged)" in full
    t = int(plain.target[0])
    p0 = float(plain.probabilities()[0, t])
    p1 = float(expected.probabilities()[0, t])
    assert "Overridden" in w.message_text and f"pathway {p0:.1%} → {p1:.1%}" in w.message_text
    assert re.search(r"\(\d+ ms\)\s*$", w.message_text)  # the benchmarks read it there
    assert len(w.interventions_panel.items.children) == 1  # one site, one item
    w.interventions_panel.reset_button.click()
    w.wait(TIMEOUT)
    np.testing.assert_array_equal(_map(w), before)  # exactly the previous view
    assert w.interventions == {"drop": {}, "keep": {}}
    assert "Overridden" not in w.message_text
    assert w.message_text.split("(")[0] == before_msg.split("(")[0]


def test_trait_from_python_names_the_site_and_the_chart_follows(w):
    i = w.layers.selected_site
    site = w.explanation.site_names[i]
    top = [int(c) for c in w.layers.channel_data()["channels"][:2]]
    w.interventions = {"drop": {i: [top[1]]}, "keep": {site: [top[0]]}}
    w.wait(TIMEOUT)
    assert w.interventions == {"drop": {site: [top[1]]}, "keep": {site: [top[0]]}}
    assert list(w.layers.channel_states()[:2]) == [FORCED, REMOVED]
    assert len(w.interventions_panel.items.children) == 2
    # a per-item remove button drops that entry only
    w.interventions_panel._buttons[0].click()
    w.wait(TIMEOUT)
    assert w.interventions == {"drop": {}, "keep": {site: [top[0]]}}


@pytest.mark.parametrize(
    "bad",
    [
        {"drop": {"no.such.site": [1]}},
        {"remove": {}},
        {"drop": [1, 2]},
        {"drop": {0: [10_000]}},
        {"drop": {0: [1]}, "keep": {0: [1]}},
        "drop everything",
    ],
)
def test_bad_values_raise_and_keep_the_previous_state(w, bad):
    site = _site(w)
    w.interventions = {"drop": {site: [0]}}
    w.wait(TIMEOUT)
    shown = _map(w)
    with pytest.raises(InputError):
        w.interventions = bad
    assert w.interventions == {"drop": {site: [0]}, "keep": {}}
    w.wait(TIMEOUT)
    np.testing.assert_array_equal(_map(w), shown)


def test_full_network_ablation_and_sparsity_keep_the_overrides(w):
    plain = w.explanation
    site = _site(w)
    w.interventions = {"drop": {site: [0, 1]}, "keep": {site: [2]}}
    w.intervention_network = "full"
    w.wait(TIMEOUT)
    assert w.interventions_panel.network_buttons.value == "full"
    expected = plain.with_overrides(drop={site: [0, 1]}, network="full")  # keep: no effect
    assert w.explanation.interventions.network == "full"
    np.testing.assert_array_equal(_map(w), _expected_map(expected))
    keep_row = w.interventions_panel.items.children[1]
    assert "no effect on the full network" in keep_row.children[1].value
    w.intervention_network = "pathway"
    w.sparsity = 0.5
    w.wait(TIMEOUT)
    expected = plain.at_sparsity(0.5).with_overrides(drop={site: [0, 1]}, keep={site: [2]})
    np.testing.assert_array_equal(_map(w), _expected_map(expected))
    assert w.interventions["keep"] == {site: [2]}


def test_a_spec_that_no_longer_parses_is_cleared_with_a_message(w):
    site = _site(w)
    w.interventions = {"drop": {site: [0]}}
    w.wait(TIMEOUT)
    e = w.explanation
    req = Request(1, 0, None, "neuron_mct", "global", 0.7, {"drop": {"gone": [0]}}, "pathway")
    assert w._apply_interventions(req, e) is e
    assert w.interventions == {"drop": {}, "keep": {}}
    assert "cleared" in w._interventions_note


def test_site_button_cycles_the_whole_selected_site(w):
    plain = w.explanation
    site = _site(w)
    button = w.interventions_panel.site_button
    assert button.description == "selected site: remove"
    button.click()
    w.wait(TIMEOUT)
    assert w.interventions == {"drop": {site: "all"}, "keep": {}}
    assert button.description == "selected site: force in"
    expected = plain.with_overrides(drop={site: "all"})
    np.testing.assert_array_equal(_map(w), _expected_map(expected))
    button.click()
    w.wait(TIMEOUT)
    assert w.interventions == {"drop": {}, "keep": {site: "all"}}
    _click(w, 0)  # a channel click on a whole-site override says so and changes nothing
    assert w.interventions == {"drop": {}, "keep": {site: "all"}}
    assert "whole-site" in w.message_text
    button.click()
    w.wait(TIMEOUT)
    assert w.interventions == {"drop": {}, "keep": {}}


def test_new_scope_method_and_picture_keep_the_overrides(w):
    site = _site(w)
    w.interventions = {"drop": {site: [0, 3]}}
    w.scope = "layer"
    w.wait(TIMEOUT)
    assert w.explanation.scope == "layer"
    assert w.explanation.interventions.as_spec()["drop"] == {site: [0, 3]}
    w.set_image(_photo(1))
    w.wait(TIMEOUT)
    e = w.explanation
    assert e.interventions.as_spec()["drop"] == {site: [0, 3]}
    plain = w._session.cached((w._images.current, int(e.target[0]), w.method, "layer"))  # noqa: SLF001
    np.testing.assert_array_equal(_map(w), _expected_map(plain.with_overrides(drop={site: [0, 3]})))
