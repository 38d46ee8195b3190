"""The explorer's comparison panel with a faked front end: collapsed and idle until
opened; opened, one overlay per method whose map equals attribute()'s at the explorer's
picture, target, sparsity and scope, captioned with the restricted logit; it follows
the explorer while open (sparsity, target, a model change), not while closed; Cancel
and a newer state stop a run; the user's model is left unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from critpath_widgets.attribution import PATHWAY_METHODS, attribute
from critpath_widgets.engine import PathwayExplainer, reduce_channels
from critpath_widgets.errors import InputError
from critpath_widgets.widgets import compare as cmp

from .reference import assert_same_state, model_state
from .test_explorer_baselines import _explorer, small_cnn

pytest.importorskip("captum")
TIMEOUT = 120


@pytest.fixture
def setup():
    model = small_cnn()
    before = model_state(model)
    w = _explorer(model)
    yield model, w
    w.close()
    assert_same_state(before, model_state(model))


def _settle(w) -> None:
    assert w.wait(TIMEOUT)
    assert w.comparison.wait(TIMEOUT), "the comparison did not finish"


def _want(model, w, method: str) -> np.ndarray:
    """attribute() at what the explorer shows, reduced like the explorer's maps."""
    x = w._images.get(w._images.shown).x
    opts = {}
    if method in PATHWAY_METHODS:
        opts = {"sparsity": float(w.sparsity), "scope": w.scope}
        if method == "pathway_intgrad":
            opts["steps"] = 2  # the explorer's steps (tests' _explorer)
    return reduce_channels(attribute(model, x, method, int(w.target), **opts))[0].numpy()


def _check_shown(model, w) -> None:
    p = w.comparison
    c = p.comparison
    assert c is not None and p.last_error is None, p.message.value
    assert (c.target, c.sparsity, c.scope) == (w.target, pytest.approx(w.sparsity), w.scope)
    x = w._images.get(w._images.shown).x
    ex = PathwayExplainer(model)
    for m in p.methods.value:
        np.testing.assert_allclose(p.overlays[m].array, _want(model, w, m), atol=1e-6, err_msg=m)
        caption = p.captions[m].value
        if m in PATHWAY_METHODS:
            steps = {"steps": 2} if m == "pathway_intgrad" else {}
            e = ex.explain(
                x, w.target, method=PATHWAY_METHODS[m], sparsity=w.sparsity, scope=w.scope, **steps
            )
            logit = float(e.pathway_logits[0, w.target])
            assert f"target logit {logit:.2f} through the pathway" in caption
            assert f"sparsity {w.sparsity:.2f}" in caption
        else:
            assert "full network, no pathway" in caption


def test_collapsed_and_idle_until_opened_then_one_overlay_per_method(setup, tmp_path):
    model, w = setup
    p = w.comparison
    assert "critpath-compare-section" in w.comparison_section._dom_classes
    assert w.comparison_section.selected_index is None
    assert p.comparison is None and not p.busy and not p.overlays
    w.comparison_section.selected_index = 0  # the user opens it
    _settle(w)
    assert list(p.methods.value) == [
        "pathway_mct",
        "pathway_intgrad",
        "pathway_random",
        "gradient",
    ]
    assert [c.children[0] for c in p.grid.children] == [p.overlays[m] for m in p.methods.value]
    assert p.grid.layout.flex_flow == "row wrap"  # wraps to fit the notebook column
    _check_shown(model, w)
    # the explorer's map on show is the comparison's NeuronMCT map
    np.testing.assert_allclose(p.overlays["pathway_mct"].array, w.pathway_overlay.array)
    # the static figure of what the panel shows: photo + one titled panel per method
    fig_path = p.save(tmp_path / "compare.png")
    assert fig_path.stat().st_size > 0


def test_follows_the_explorer_while_open_not_while_closed(setup):
    model, w = setup
    p = w.comparison
    p.methods.value = ("pathway_mct", "pathway_random", "gradcam")
    w.comparison_section.selected_index = 0
    _settle(w)
    _check_shown(model, w)
    w.sparsity = 0.45
    _settle(w)
    _check_shown(model, w)
    w.target = (w.target + 1) % 10
    _settle(w)
    _check_shown(model, w)
    w.scope = "layer"
    _settle(w)
    _check_shown(model, w)
    # closed: no computation; opened again, it catches up
    w.comparison_section.selected_index = None
    old = p.comparison
    w.sparsity = 0.8
    _settle(w)
    assert p.comparison is old and old.sparsity != pytest.approx(0.8)
    w.comparison_section.selected_index = 0
    _settle(w)
    _check_shown(model, w)


def test_recomputed_after_the_model_changes(setup):
    model, w = setup
    p = w.comparison
    p.methods.value = ("pathway_mct", "gradient")
    w.comparison_section.selected_index = 0
    _settle(w)
    before = p.overlays["gradient"].array
    saved = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(-1.5)  # the user edits the weights
    try:
        w.refresh()
        _settle(w)
        assert not np.allclose(p.overlays["gradient"].array, before)
        _check_shown(model, w)
    finally:
        with torch.no_grad():
            model[0].weight.copy_(saved)  # the fixture checks the state at the end


def test_cancel_and_superseded_runs_stop(setup, monkeypatch):
    model, w = setup
    p = w.comparison
    p.methods.value = ("gradient", "pathway_random")
    gate, entered = threading.Event(), threading.Event()
    real = cmp.compare_methods

    def slow(*args, **kwargs):
        if args[3] == ["pathway_random"] and not gate.is_set():
            entered.set()
            gate.wait(TIMEOUT)
            kwargs["progress"](0, 1)  # the engine's progress call: the stop check
        return real(*args, **kwargs)

    monkeypatch.setattr(cmp, "compare_methods", slow)
    w.comparison_section.selected_index = 0
    assert entered.wait(TIMEOUT)
    p.cancel_button.click()
    gate.set()
    assert p.wait(TIMEOUT)
    assert p.comparison is None and "Stopped" in p.message.value
    assert p.cancel_button.disabled
    # a newer state supersedes a run: only the newer one is shown
    gate.clear()
    entered.clear()
    p.update()
    assert entered.wait(TIMEOUT)
    gate.set()
    w.sparsity = 0.3
    _settle(w)
    _check_shown(model, w)


def test_no_methods_and_errors_are_messages(setup):
    _, w = setup
    p = w.comparison
    w.comparison_section.selected_index = 0
    _settle(w)
    p.methods.value = ()
    assert "at least one method" in p.message.value and not p.grid.children
    with pytest.raises(InputError, match="no comparison on show"):
        p.save("never.png")
    w._shown = None  # nothing on show: the panel says so instead of raising
    p.update(force=True)
    assert p.last_error is not None and "Error" in p.message.value


def test_a_run_gives_way_when_the_explorer_moves_on(setup, monkeypatch):
    """The panel holds the compute lock per method; a new request of the explorer makes
    the run stop at its next step (the explorer then computes) and it is redone for
    what the explorer shows next."""
    model, w = setup
    p = w.comparison
    p.methods.value = ("gradient", "pathway_random")
    gate, entered = threading.Event(), threading.Event()
    calls: list[float] = []
    finished: list[float] = []
    real = cmp.compare_methods

    def slow(*args, **kwargs):
        if args[3] != ["pathway_random"]:
            return real(*args, **kwargs)
        calls.append(args[4])
        if not gate.is_set():
            entered.set()
            gate.wait(TIMEOUT)
        out = real(*args, **kwargs)
        finished.append(args[4])
        return out

    monkeypatch.setattr(cmp, "compare_methods", slow)
    w.comparison_section.selected_index = 0
    assert entered.wait(TIMEOUT)
    w.sparsity = 0.35  # the explorer is asked for more while the panel computes
    gate.set()
    _settle(w)
    _check_shown(model, w)
    assert calls == [pytest.approx(0.7), pytest.approx(0.35)]
    assert finished == [pytest.approx(0.35)]  # the run of 0.7 stopped at its next step
