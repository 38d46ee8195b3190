"""at_sparsity of path-dependent methods (greedy): a rerun equal to a fresh explain, while
NeuronMCT keeps re-thresholding its cached scores; the explorer follows both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from critpath_widgets import PathwayExplainer, PathwayExplorer
from critpath_widgets.engine import passes
from critpath_widgets.engine.scorers import SCORERS

TIMEOUT = 120


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).eval()


def rand_x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_only_greedy_declares_itself_path_dependent():
    assert {m for m, s in SCORERS.items() if s.path_dependent} == {"greedy"}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_greedy_at_sparsity_equals_a_fresh_greedy_run(scope):
    ex = PathwayExplainer(small_cnn())
    x = rand_x()
    opts = dict(method="greedy", scope=scope, step_fraction=0.05)
    e = ex.explain(x, sparsity=0.7, **opts)
    assert e.path_dependent
    for s in (0.9, 0.4):
        steps = []
        moved = e.at_sparsity(s, progress=lambda d, t, steps=steps: steps.append((d, t)))
        fresh = ex.explain(x, sparsity=s, **opts)
        assert (moved.method, moved.sparsity, moved.scope) == ("greedy", s, scope)
        assert moved.scoring is not e.scoring and steps, "greedy was not run again"
        for a, b in zip(moved.pathway.masks, fresh.pathway.masks, strict=True):
            assert torch.equal(a, b)
        torch.testing.assert_close(moved.saliency, fresh.saliency, rtol=1e-6, atol=1e-7)
        for a, b in zip(moved.scores, fresh.scores, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same sparsity is a new selection from the scores it already has
    same = e.at_sparsity(0.7)
    assert same.scoring is e.scoring and torch.equal(same.pathway.flat, e.pathway.flat)


def test_greedy_at_sparsity_keeps_an_explicit_target():
    ex = PathwayExplainer(small_cnn())
    x = rand_x()
    e = ex.explain(x, target=[1, 3], method="greedy", sparsity=0.5, step_fraction=0.1)
    moved = e.at_sparsity(0.8)
    fresh = ex.explain(x, target=[1, 3], method="greedy", sparsity=0.8, step_fraction=0.1)
    assert moved.target.tolist() == [1, 3]
    assert torch.equal(moved.pathway.flat, fresh.pathway.flat)


def test_neuron_mct_at_sparsity_costs_no_rescoring(monkeypatch):
    ex = PathwayExplainer(small_cnn())
    e = ex.explain(rand_x(), sparsity=0.5)
    assert not e.path_dependent
    calls = []
    orig = passes.score_pass
    monkeypatch.setattr(passes, "score_pass", lambda *a, **k: calls.append(1) or orig(*a, **k))
    moved = e.at_sparsity(0.9)
    assert not calls and moved.scoring is e.scoring and moved.sparsity == 0.9


def _preprocess(im: Image.Image) -> torch.Tensor:
    arr = np.array(im.convert("RGB").resize((16, 16)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


@pytest.mark.slow
def test_explorer_reruns_greedy_on_a_sparsity_change_and_shows_progress():
    model = small_cnn()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), np.uint8))
    w = PathwayExplorer(model, image=photo, preprocess=_preprocess, method="greedy", sparsity=0.3)
    try:
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        first = w.explanation
        seen = []
        w.progress.observe(lambda ch: seen.append(ch["new"]), "value")
        w.sparsity = 0.5
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        e = w.explanation
        assert (e.method, e.sparsity) == ("greedy", pytest.approx(0.5))
        assert e.scoring is not first.scoring and seen, "no rerun with progress"
        assert w.progress_box.layout.display == "none" and w.cancel_button.disabled
        fresh = w.explainer.explain(
            first.inputs, target=first.target, method="greedy", sparsity=0.5
        )
        assert torch.equal(e.pathway.flat, fresh.pathway.flat)
        # back to the first sparsity: run again, the same pathway as before
        w.sparsity = 0.3
        assert w.wait(TIMEOUT)
        assert torch.equal(w.explanation.pathway.flat, first.pathway.flat)
    finally:
        w.close()
