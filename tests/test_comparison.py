"""compare_methods and comparison_figure: each method's map equals attribute()'s, each
pathway's restricted logit equals explain()'s and the explicitly masked network's, the
random pathway loses the logit that NeuronMCT's keeps on a real photo, cached
explanations are reused, bad input raises our errors, the model is left unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from critpath_widgets.attribution import PATHWAY_METHODS, attribute
from critpath_widgets.comparison import (
    canonical_method,
    compare_methods,
    comparison_figure,
)
from critpath_widgets.engine import PathwayExplainer, reduce_channels
from critpath_widgets.errors import InputError, OptionError

from . import reference as ref

pytest.importorskip("captum")

PATHWAY = ["pathway_mct", "pathway_intgrad", "pathway_random", "pathway_greedy"]


def small_cnn() -> nn.Module:
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


@pytest.fixture
def setup():
    model = small_cnn()
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    before = ref.model_state(model)
    yield model, x
    ref.assert_same_state(before, ref.model_state(model))


def _options(method: str) -> dict:
    return {"steps": 4} if method == "pathway_intgrad" else {}


def test_maps_and_logits_equal_independent_recomputation(setup):
    model, x = setup
    target, sparsity, scope = 3, 0.6, "layer"
    methods = [*PATHWAY, "gradient", "gradcam"]
    c = compare_methods(model, x, target, methods, sparsity, scope, steps=4)
    assert list(c.results) == methods and c.target == target
    full = model(x)[0].detach()
    assert c.full_logit == pytest.approx(float(full[target]), rel=1e-5, abs=1e-6)
    assert c.full_probability == pytest.approx(float(torch.softmax(full, 0)[target]), rel=1e-5)
    fresh = PathwayExplainer(model)  # not the cached one compare_methods used
    for m in methods:
        r = c[m]
        opts = {"sparsity": sparsity, "scope": scope, **_options(m)} if m in PATHWAY else {}
        want = reduce_channels(attribute(model, x, m, target, **opts))[0].numpy()
        np.testing.assert_allclose(r.map, want, rtol=1e-5, atol=1e-7, err_msg=m)
        if m in PATHWAY_METHODS:
            engine_opts = {"steps": 4} if m == "pathway_intgrad" else {}
            e = fresh.explain(
                x, target, method=PATHWAY_METHODS[m], sparsity=sparsity, scope=scope, **engine_opts
            )
            assert r.pathway and r.logit == pytest.approx(float(e.pathway_logits[0, target]))
            # the restricted network run explicitly: every site's output times its mask
            masked = ref.masked_model(model, e.pathway.masks)(x)[0].detach()
            assert r.logit == pytest.approx(float(masked[target]), rel=1e-4, abs=1e-5)
            p = float(torch.softmax(masked.double(), 0)[target])
            assert r.probability == pytest.approx(p, rel=1e-4, abs=1e-6)
        else:  # a baseline carries the full network's logit
            assert not r.pathway and r.logit == c.full_logit
            assert "full network, no pathway" in c.logit_text(m)


def test_engine_names_and_default_target(setup):
    model, x = setup
    c = compare_methods(model, x, None, ["neuron_mct", "random"], 0.5)
    assert list(c.results) == ["pathway_mct", "pathway_random"]
    assert c.target == int(model(x).argmax())
    assert c["neuron_mct"] is c["pathway_mct"]


def test_cached_explanation_reused_at_another_sparsity(setup, monkeypatch):
    model, x = setup
    ex = PathwayExplainer(model)
    cached = ex.explain(x, 2, method="neuron_mct", sparsity=0.3)
    want = ex.explain(x, 2, method="neuron_mct", sparsity=0.8)
    calls = []
    real = ex.explain
    monkeypatch.setattr(ex, "explain", lambda *a, **k: calls.append(k) or real(*a, **k))
    c = compare_methods(ex, x, 2, ["pathway_mct"], 0.8, explanations={"neuron_mct": cached})
    assert calls == []  # re-thresholded from the cached scores, not scored again
    np.testing.assert_allclose(c["pathway_mct"].map, want.saliency_map()[0].numpy(), atol=1e-7)
    assert c["pathway_mct"].logit == pytest.approx(float(want.pathway_logits[0, 2]))
    # a cached explanation of another target is not used
    compare_methods(ex, x, 5, ["pathway_mct"], 0.8, explanations={"neuron_mct": cached})
    assert len(calls) == 1


def test_progress_can_stop_and_results_arrive_one_by_one(setup):
    model, x = setup
    seen, arrived = [], []
    compare_methods(
        model,
        x,
        0,
        ["pathway_mct", "gradient"],
        progress=lambda d, n: seen.append((d, n)),
        on_result=lambda r: arrived.append(r.method),
    )
    assert seen[0] == (0, 2) and seen[-1] == (2, 2) and arrived == ["pathway_mct", "gradient"]

    class Stop(Exception):
        pass

    def stop(d: int, n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        compare_methods(model, x, 0, ["pathway_mct"], progress=stop)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"methods": ["nope"]}, OptionError, "unknown method 'nope'"),
        ({"methods": ["gradient", "gradient"]}, OptionError, "twice"),
        ({"methods": []}, OptionError, "at least one"),
        ({"target": 10}, InputError, "not a class index"),
        ({"target": "espresso"}, InputError, "class index"),
        ({"sparsity": 1.5}, Exception, "sparsity"),
    ],
)
def test_bad_input_raises_our_errors(setup, kwargs, error, words):
    model, x = setup
    with pytest.raises(error, match=words):
        compare_methods(model, x, **{"methods": ["gradient"], **kwargs})


def test_one_image_only(setup):
    model, x = setup
    with pytest.raises(InputError, match="one image"):
        compare_methods(model, torch.cat([x, x]), 0, ["gradient"])
    with pytest.raises(InputError, match="Module or a PathwayExplainer"):
        compare_methods("model", x, 0, ["gradient"])
    with pytest.raises(OptionError):
        canonical_method(3)


def test_figure_titles_say_method_scope_sparsity_target_logits(setup):
    model, x = setup
    c = compare_methods(model, x, 1, ["pathway_mct", "pathway_random", "gradient"], 0.7)
    photo = np.zeros((24, 24, 3), dtype=np.uint8)
    fig = comparison_figure(photo, c, [f"c{i}" for i in range(10)])
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0].startswith("photo; target 'c1'")
    mct, rnd, grad = titles[1:]
    assert "NeuronMCT" in mct and "global scope, sparsity 0.70" in mct and "'c1'" in mct
    assert f"target logit {c['pathway_mct'].logit:.2f} through the pathway" in mct
    assert f"{c.full_logit:.2f} full network" in rnd and "Random" in rnd
    assert "baseline, full network" in grad and "no pathway" in grad


def test_random_pathway_loses_the_logit_on_a_photo():
    """The default model on a sample photo: NeuronMCT's pathway keeps most of the target
    logit, the random one at the same sparsity loses it (what the panel shows)."""
    from critpath_widgets.models import load_model, sample_image

    bundle = load_model()
    x = bundle.preprocess(sample_image("coffee"))[None]
    before = ref.model_state(bundle.model)
    c = compare_methods(bundle.model, x, None, ["pathway_mct", "pathway_random"], 0.7)
    ref.assert_same_state(before, ref.model_state(bundle.model))
    mct, rnd = c["pathway_mct"].logit, c["pathway_random"].logit
    assert c.full_logit > 5
    assert mct > 0.5 * c.full_logit and rnd < 0.25 * mct, (c.full_logit, mct, rnd)
    # and the maps differ: rank correlation of the two maps' magnitudes well below 1
    from scipy.stats import spearmanr

    rho = spearmanr(np.abs(c["pathway_mct"].map).ravel(), np.abs(c["pathway_random"].map).ravel())
    assert rho.statistic < 0.3, rho  # seen: 0.02-0.10 on four sample photos


# ----------------------------------------------------------------- critpath --compare
def _tiny_bundle():
    from critpath_widgets.models import ModelBundle

    def preprocess(im):
        arr = np.asarray(im.convert("RGB").resize((24, 24)), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0

    names = [f"kind{i}" for i in range(10)]
    return ModelBundle(small_cnn(), preprocess, names, "tiny", crop=lambda im: im)


def _cli(argv: list[str]) -> int:
    from critpath_widgets import cli

    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_cli_compare_writes_the_figure_and_the_numbers(tmp_path, monkeypatch, capsys):
    import json

    from PIL import Image

    from critpath_widgets import models

    bundle = _tiny_bundle()
    monkeypatch.setattr(models, "load_model", lambda name, weights=None: bundle)
    photo = tmp_path / "p.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "cmp.png"
    argv = ["explain", str(photo), "--compare", "neuron_mct,pathway_random,gradient"]
    rc = _cli([*argv, "--sparsity", "0.5", "--target", "3", "-o", str(out), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert rc == 0 and out.stat().st_size > 0
    x = bundle.preprocess(Image.open(photo))[None]
    want = compare_methods(bundle.model, x, 3, ["pathway_mct", "pathway_random", "gradient"], 0.5)
    assert record["target"] == 3 and record["target_name"] == "kind3"
    assert list(record["methods"]) == ["pathway_mct", "pathway_random", "gradient"]
    for m, r in want.results.items():
        assert record["methods"][m]["logit"] == pytest.approx(r.logit, rel=1e-5)
    assert record["full_logit"] == pytest.approx(want.full_logit, rel=1e-5)


def test_cli_compare_bad_method_is_one_line_before_the_model_loads(monkeypatch, capsys):
    from critpath_widgets import models

    def fail(*args, **kwargs):
        pytest.fail("the model loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", fail)
    rc = _cli(["explain", "coffee", "--compare", "pathway_mct,nope", "-o", "x.png"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("critpath: error: --compare: unknown method 'nope'"), err
