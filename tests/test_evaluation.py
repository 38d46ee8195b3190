"""critpath_widgets.evaluation: deletion/insertion, sanity check, pathway analysis.

Checked against direct computations (a linear model's curve in closed form, dead
shares and overlaps from independently recorded activations) and against what the
paper's evaluations must show on the default model, where chance is the yardstick.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import critpath_widgets as cw
from critpath_widgets import evaluation as ev
from critpath_widgets.engine import PathwayExplainer
from critpath_widgets.errors import CritpathError, InputError, OptionError

from .reference import assert_same_state, instrumented_copy, model_state, run


class Linear(nn.Module):
    """Two logits: w . x + b for class 0, 0 for class 1; counts its forward calls."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.fc = nn.Linear(w.numel(), 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[0] = w.flatten()
            self.fc.bias.copy_(torch.tensor([b, 0.0]))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 8, 8, generator=g) + 0.1
    x = torch.rand(1, 3, 8, 8, generator=g) + 0.1
    return Linear(w, 0.5).double(), x.double(), w.double()


def _direct_logits(w, x, b, steps, insert=False):
    """The linear model's class-0 logit as whole pixels are zeroed (or put back) in the
    order of their largest |w * x| over channels, computed by hand."""
    contrib = (w * x[0]).numpy()  # (C, H, W), all positive here
    key = np.abs(contrib).max(0).ravel()
    pixel = contrib.sum(0).ravel()
    order = sorted(range(key.size), key=lambda i: (-key[i], i))
    out = []
    for k in range(steps + 1):
        chosen = order[: k * key.size // steps]
        moved = float(pixel[chosen].sum())
        out.append(b + moved if insert else b + pixel.sum() - moved)
    return np.array(out)


def test_deletion_on_a_linear_model_matches_the_direct_computation(linear):
    model, x, w = linear
    before = model_state(model)
    r = ev.deletion(model, x, w * x, steps=8, baseline="zero")
    expect = _direct_logits(w, x, 0.5, 8)
    np.testing.assert_allclose(r.logits[0], expect, rtol=1e-10)
    np.testing.assert_allclose(r.scores[0], 1 / (1 + np.exp(-expect)), rtol=1e-10)
    assert np.all(np.diff(r.logits[0]) < 0)  # every removed pixel had a positive share
    np.testing.assert_allclose(r.fractions, np.arange(9) / 8)
    np.testing.assert_allclose(r.auc[0], np.trapezoid(r.scores[0], r.fractions))
    assert r.target.tolist() == [0] and r.kind == "deletion" and r.order == "saliency"
    # all shares positive: removing the largest first is the fastest drop there is
    rand = ev.deletion(model, x, None, steps=8, baseline="zero", random_order=True)
    assert np.all(r.logits[0] <= rand.logits[0] + 1e-12) and r.mean_auc < rand.mean_auc
    ins = ev.insertion(model, x, w * x, steps=8, baseline="zero")
    np.testing.assert_allclose(ins.logits[0], _direct_logits(w, x, 0.5, 8, True), rtol=1e-10)
    assert_same_state(before, model_state(model))
    json.dumps(r.to_dict())


def test_each_images_steps_run_as_one_batched_pass(linear):
    model, x, w = linear
    x2 = torch.cat([x, x.flip(-1)])
    sal = torch.cat([w * x, w * x.flip(-1)])
    model.calls.clear()
    r = ev.deletion(model, x2, sal, steps=8, baseline="mean")
    assert model.calls == [9, 9]  # steps + 1 images per input, one forward each
    model.calls.clear()
    chunked = ev.deletion(model, x2, sal, steps=8, baseline="mean", batch_size=4)
    assert model.calls == [4, 4, 1, 4, 4, 1]
    np.testing.assert_allclose(chunked.scores, r.scores, rtol=1e-12)
    assert r.scores.shape == (2, 9) and r.auc.shape == (2,)
    # a (N, H, W) map orders pixels the same as the (N, C, H, W) one it reduces
    flat = ev.deletion(model, x2, sal.abs().amax(1), steps=8, baseline="mean")
    np.testing.assert_array_equal(flat.scores, r.scores)


def test_random_baseline_is_seeded_and_matches_random_order(linear):
    model, x, _ = linear
    a = ev.random_baseline(model, x, "insertion", steps=4, baseline="blur", seed=3)
    b = ev.insertion(model, x, None, steps=4, baseline="blur", random_order=True, seed=3)
    c = ev.insertion(model, x, None, steps=4, baseline="blur", random_order=True, seed=4)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.array_equal(a.logits, c.logits)
    # the last insertion step is the image itself, the first the baseline
    blurred = ev.deletion(model, x, None, steps=1, baseline="blur", random_order=True)
    np.testing.assert_allclose(a.logits[0, [0, -1]], blurred.logits[0, [1, 0]], rtol=1e-12)


def test_bad_inputs_raise_our_errors_and_leave_the_model_alone(linear):
    model, x, w = linear
    before = model_state(model)
    with pytest.raises(InputError, match="saliency must be shaped"):
        ev.deletion(model, x, torch.zeros(1, 3, 4, 4))
    with pytest.raises(InputError, match="saliency must be shaped"):
        ev.insertion(model, x, torch.zeros(2, 8, 8))
    with pytest.raises(OptionError, match="unknown baseline"):
        ev.deletion(model, x, w * x, baseline="noise")
    with pytest.raises(InputError, match="steps"):
        ev.deletion(model, x, w * x, steps=0)
    with pytest.raises(InputError, match="saliency is None"):
        ev.deletion(model, x, None)
    with pytest.raises(OptionError, match="unknown metric"):
        ev.sanity_check(model, x, [lambda m, x, t: x], metrics=("spearman", "pearson"))
    with pytest.raises(CritpathError):
        ev.sanity_check(model, x, ["no_such_method"])
    assert_same_state(before, model_state(model))


class SmallNet(nn.Module):
    """A ReLU CNN whose modules are registered in another order than they run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        # (the engine reads the input channels off the first convolution registered)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def test_sanity_check_cascades_from_the_logits_down_on_a_copy():
    model = SmallNet().train()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    before, rng = model_state(model), torch.get_rng_state()

    def grad_x_input(m, x, t):
        return PathwayExplainer(m).gradient(x, t) * x

    r = ev.sanity_check(model, x, {"gxi": grad_x_input, "grad": "gradient"}, keep_maps=True)
    assert r.steps == ["(none)", "fc", "conv2", "conv1"]  # reverse order of first use
    for m in ("gxi", "grad"):
        for k in ev.METRICS:
            assert r.similarity[m][k].shape == (4,) and r.per_image[m][k].shape == (4, 2)
            assert r.similarity[m][k][0] == 1.0
        assert r.maps[m].shape == (4, 2, 12, 12)
        # step 0 is the untouched model's map (2-D: largest magnitude, sign kept)
        g = PathwayExplainer(model).gradient(x, torch.as_tensor(r.target))
        g = g * x if m == "gxi" else g
        idx = g.abs().argmax(1, keepdim=True)
        np.testing.assert_allclose(r.maps[m][0], g.gather(1, idx)[:, 0].numpy(), rtol=1e-5)
    same = ev.sanity_check(model, x, {"gxi": grad_x_input, "grad": "gradient"}, layers=2)
    assert same.steps == r.steps[:3]
    np.testing.assert_array_equal(same.per_image["grad"]["hog"], r.per_image["grad"]["hog"][:3])
    assert torch.equal(torch.get_rng_state(), rng)  # seeded without touching the user's RNG
    assert_same_state(before, model_state(model))
    json.dumps(r.to_dict())


def test_similarity_metrics_on_known_pairs():
    m = np.random.default_rng(0).normal(size=(32, 32))
    for k in ev.METRICS:
        assert ev.similarity(m, m, k) == pytest.approx(1.0)
    assert ev.similarity(m, -m, "spearman") == pytest.approx(-1.0)
    assert ev.similarity(m, -m, "spearman_abs") == pytest.approx(1.0)
    assert ev.similarity(m, 3 * m, "ssim") == pytest.approx(1.0)  # scale-free


def test_dead_share_and_jaccard_against_recorded_activations():
    model = SmallNet().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    before = model_state(model)
    ex = PathwayExplainer(model)
    e1 = ex.explain(x, sparsity=0.6)
    e2 = ex.explain(x, e1.target, "random", sparsity=0.6, seed=1)
    # activations recorded on an instrumented copy, sharing no code with the engine
    copy_, ctl = instrumented_copy(model)
    acts: list[torch.Tensor] = []
    with torch.no_grad():
        run(copy_, ctl, x, lambda i, a: acts.append(a.clone()) or a)
    for s in (0, 1):
        d = ev.dead_share(e1, sample=s)
        masks = [m[s] for m in e1.pathway.masks]
        dead = [a[s] <= 0 for a in acts]
        kd = [int((m & dd).sum()) for m, dd in zip(masks, dead, strict=True)]
        kept = [int(m.sum()) for m in masks]
        assert d.kept_dead.tolist() == kd and d.kept.tolist() == kept
        assert d.overall == pytest.approx(sum(kd) / sum(kept))
        alldead = sum(int(dd.sum()) for dd in dead) / sum(dd.numel() for dd in dead)
        assert d.network_overall == pytest.approx(alldead)
        j = ev.jaccard(e1, e2, sample=s)
        a = torch.cat([m[s].flatten() for m in e1.pathway.masks])
        b = torch.cat([m[s].flatten() for m in e2.pathway.masks])
        assert j.overall == pytest.approx(int((a & b).sum()) / int((a | b).sum()))
        assert j.per_site.shape == (2,)
    assert ev.jaccard(e1, e1).overall == 1.0
    with pytest.raises(InputError, match="out of range"):
        ev.dead_share(e1, sample=2)
    other = ex.explain(x.flip(0), sparsity=0.6)
    with pytest.raises(InputError, match="not the same input"):
        ev.jaccard(e1, other)
    assert_same_state(before, model_state(model))
    json.dumps(ev.dead_share(e1).to_dict())


# ---------------------------------------------------------------- the default model
@pytest.fixture(scope="module")
def coffee():
    b = cw.load_model()
    return b.model, b.preprocess(cw.sample_image("coffee"))[None]


def test_deletion_by_the_pathway_gradient_beats_chance(coffee):
    model, x = coffee
    before = model_state(model)
    e = PathwayExplainer(model).explain(x)
    d = ev.deletion(model, x, e.saliency, steps=8)
    rnd = ev.random_baseline(model, x, "deletion", steps=8)
    # the most relevant pixels first: the probability falls much faster than at random
    assert d.mean_auc < rnd.mean_auc - 0.1
    ins = ev.insertion(model, x, e.saliency, steps=8)
    chance = ev.random_baseline(model, x, "insertion", steps=8)
    assert ins.mean_auc > chance.mean_auc
    assert d.target.tolist() == e.target.tolist()
    assert_same_state(before, model_state(model))


def test_sanity_check_gradients_decorrelate_on_the_default_model(coffee):
    model, x = coffee
    before = model_state(model)
    methods = ["gradient", "pathway_mct"]
    extra = getattr(cw, "attribute", None) is not None
    if extra:
        methods.append("guided_backprop")
    r = ev.sanity_check(model, x, methods, metrics=("spearman_abs",), layers=6)
    assert r.steps[:3] == ["(none)", "_fc", "_bn1"]  # from the logits down
    for m in ("gradient", "pathway_mct"):
        s = r.similarity[m]["spearman_abs"]
        assert s[-1] < s[0] - 0.3, (m, s)
    if extra:
        last = r.similarity
        assert last["guided_backprop"]["spearman_abs"][-1] > last["gradient"]["spearman_abs"][-1]
    assert_same_state(before, model_state(model))


def test_neuron_mct_pathway_retains_more_than_a_random_one(coffee):
    model, x = coffee
    before = model_state(model)
    ex = PathwayExplainer(model)
    mct = ev.retained(ex, x, "neuron_mct", [0.8, 0.9])
    rnd = ev.retained(ex, x, "random", [0.9], target=mct.target, seed=0)
    assert mct.pathway_probability[0, 1] > rnd.pathway_probability[0, 0] + 0.3
    assert mct.pathway_logit[0, 1] > rnd.pathway_logit[0, 0] + 5
    assert mct.argmax_kept[0, 1] and not rnd.argmax_kept[0, 0]
    # the same as explaining at each sparsity directly
    direct = ex.explain(x, mct.target, sparsity=0.9)
    t = int(mct.target[0])
    assert mct.pathway_logit[0, 1] == pytest.approx(float(direct.pathway_logits[0, t]), rel=1e-5)
    assert mct.logit[0] == pytest.approx(float(direct.logits[0, t]), rel=1e-5)
    d = ev.dead_share(direct)  # runs on a model whose ReLU6 writes in place
    assert 0 <= d.overall <= 1 and len(d.per_site) == len(direct.site_names)
    assert_same_state(before, model_state(model))
    json.dumps(mct.to_dict())


def test_results_plot_and_leave_a_training_model_in_training(linear):
    import matplotlib

    matplotlib.use("Agg")
    model = SmallNet().train()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    before = model_state(model)
    d = ev.deletion(model, x, "gradient", steps=4)
    chance = ev.random_baseline(model, x, steps=4)
    assert d.plot(chance=chance).get_ylabel() == "target probability"
    s = ev.sanity_check(model, x, "gradient", metrics=("ssim", "hog"))
    assert len(s.plot().axes) == 2
    ex = PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.5)
    for r in (ev.dead_share(e), ev.jaccard(e, e), ev.retained(ex, x, sparsities=[0.5, 0.9])):
        assert r.plot() is not None
        json.dumps(r.to_dict())
    assert_same_state(before, model_state(model))
