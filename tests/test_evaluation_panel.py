"""The explorer's evaluation panel with a faked front end: Run draws curves equal to the
evaluation functions called directly on the same input, the sanity check and pathway
analysis, Cancel stops a run and the next works, the user's model is left unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from critpath_widgets.errors import Cancelled
from critpath_widgets.widgets import evaluation_adapter as ev
from critpath_widgets.widgets.explorer import baselines as bl

from .reference import assert_same_state, model_state
from .test_explorer_baselines import FAST_OPTIONS, _explorer, small_cnn

pytest.importorskip("captum")
TIMEOUT = 120


@pytest.fixture(autouse=True)
def fast_baselines(monkeypatch):
    monkeypatch.setattr(bl, "WIDGET_BASELINE_OPTIONS", FAST_OPTIONS)


@pytest.fixture
def setup():
    model = small_cnn()
    before = model_state(model)
    w = _explorer(model)
    yield model, w
    w.close()
    assert_same_state(before, model_state(model))


def _lines(lines) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return np.asarray(lines.x), np.asarray(lines.y), list(lines.labels)


def test_run_draws_what_the_evaluation_functions_give(setup):
    model, w = setup
    p = w.evaluation
    assert "critpath-evaluation-section" in w.evaluation_section._dom_classes
    assert not p.sanity.value  # opt-in: it runs every method once per layer
    p.compare.value = ("gradient", "gradcam")
    p.steps.value = 8
    p.sanity.value = True
    p.run_button.click()
    assert p.wait(TIMEOUT) and p.last_error is None, p.message.value
    x = w._images.get(w._images.shown).x
    t = w.target
    maps = {
        "neuron_mct": w.pathway_overlay.array,
        "gradient": bl.compute_baseline(model, x, "gradient", t),
        "gradcam": bl.compute_baseline(model, x, "gradcam", t),
        None: None,
    }
    for kind, lines in (("deletion", p.deletion_lines), ("insertion", p.insertion_lines)):
        xs, ys, labels = _lines(lines)
        assert len(labels) == 4 and labels[-1].startswith("random order (AUC")
        for row, m in zip(ys, maps, strict=True):
            ref = ev.curve(kind, model, x, maps[m], t, 8, "blur")
            np.testing.assert_allclose(xs, ref.fractions)
            np.testing.assert_allclose(row, ref.scores, rtol=1e-5, atol=1e-7)
        # the curve's ends: the photo itself and the fully blurred / emptied one
        probs = torch.softmax(model(x), 1)[0, t].item()
        end = 0 if kind == "deletion" else -1
        assert ys[0, end] == pytest.approx(probs, rel=1e-4)
    assert "deletion AUC" in p.auc_table.value
    # sanity check: one line per method, the data equal to the function called directly
    s = p.results["sanity"]
    _, ys, labels = _lines(p.sanity_lines)
    # step 0 is the model as it is, then the output layer first
    assert ys.shape == (3, len(s.steps)) and s.steps[:2] == ["(none)", "6"]
    ctx = w.evaluation._context()
    fns = {m: ctx.method_fn(m) for m in ("neuron_mct", "gradient", "gradcam")}
    ref = ev.sanity_check(model, x, fns, t)
    for row, m in zip(ys, ref.similarity, strict=True):
        np.testing.assert_allclose(row, ref.similarity[m], atol=1e-6)
    # pathway analysis: retained logit and Jaccard as computed directly
    e = w.explanation
    sp, logits, _ = p.results["retained"]
    for s_, lg in zip(sp, logits, strict=True):
        assert lg == pytest.approx(float(e.at_sparsity(float(s_)).pathway_logits[0, t]), rel=1e-5)
    other = w.explainer.explain(x, target=t, method="random", sparsity=w.sparsity, scope=w.scope)
    masks = zip(e.pathway.masks, other.pathway.masks, strict=True)
    inter = sum(int((a & b).sum()) for a, b in masks)
    union = sum(
        int((a | b).sum()) for a, b in zip(e.pathway.masks, other.pathway.masks, strict=True)
    )
    assert p.results["jaccard"][0] == pytest.approx(inter / union)
    assert "dead share" in p.pathway_html.value and "Jaccard" in p.pathway_html.value


def test_run_on_a_baseline_and_cancel(setup, monkeypatch):
    model, w = setup
    p = w.evaluation
    p.sanity.value = False
    w.method = "gradcam"
    w.wait(TIMEOUT)
    entered, proceed = threading.Event(), threading.Event()
    curve = ev.curve

    def gated(*a, **k):
        if not entered.is_set():
            entered.set()
            assert proceed.wait(TIMEOUT)
        return curve(*a, **k)

    monkeypatch.setattr(ev, "curve", gated)
    p.run_button.click()
    assert entered.wait(TIMEOUT)
    assert p.run_button.disabled and not p.cancel_button.disabled
    p.cancel_button.click()
    proceed.set()
    assert p.wait(TIMEOUT)
    assert isinstance(p.last_error, Cancelled) and "Cancelled" in p.message.value
    assert not p.run_button.disabled
    p.run_button.click()
    assert p.wait(TIMEOUT) and p.last_error is None, p.message.value
    assert list(p.results["deletion"])[0] == "Grad-CAM (baseline)"
    assert "no pathway" in p.pathway_html.value
    # the explorer still works
    w.method = "neuron_mct"
    w.wait(TIMEOUT)
    assert w.last_error is None


def test_adapter_returns_what_the_evaluation_module_computes():
    """The adapter only reshapes: its curves and retained logits are the evaluation
    module's, called directly on the same input."""
    from critpath_widgets import PathwayExplainer, evaluation

    model = small_cnn()
    torch.manual_seed(3)
    x = torch.randn(1, 3, 8, 8)
    m = np.random.default_rng(0).random((8, 8))
    c = ev.curve("deletion", model, x, m, 2, steps=4)
    want = evaluation.deletion(model, x, ev.saliency_input(m, x), target=2, steps=4)
    np.testing.assert_array_equal(c.scores, want.scores[0])
    assert c.auc == float(want.auc[0])
    r = ev.curve("insertion", model, x, None, 2, steps=4, seed=5)
    want = evaluation.random_baseline(model, x, kind="insertion", target=2, steps=4, seed=5)
    np.testing.assert_array_equal(r.scores, want.scores[0])
    e = PathwayExplainer(model).explain(x, 2)
    logits, probs = ev.retained(e, [0.5, 0.9], 2)
    want = evaluation.retained(e.explainer, x, e.method, [0.5, 0.9], target=2)
    np.testing.assert_array_equal(logits, want.pathway_logit[0])
    np.testing.assert_array_equal(probs, want.pathway_probability[0])
