"""Engine correctness against independent references (tests/reference.py)."""

from __future__ import annotations

import math
import traceback

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import critpath_widgets as cw
from critpath_widgets import (
    Cancelled,
    CritpathError,
    InputError,
    InputTypeError,
    ModelError,
    OptionError,
    PathwayExplainer,
    SiteWarning,
)
from critpath_widgets.engine import DEFAULT_SITE_TYPES, masking, passes
from critpath_widgets.engine.pathway.policy import keep_count

from . import reference as ref


def small_cnn(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU6(),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
        .to(dtype)
        .eval()
    )


def tv(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **kw).eval()


@pytest.fixture(scope="module")
def resnet():
    return tv("resnet18", num_classes=20)


def rand_x(n=1, size=16, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype)


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "factory,size",
    [
        (small_cnn, 16),
        (lambda: tv("resnet18", num_classes=20), 48),
        (lambda: tv("vgg11", num_classes=20), 32),
        (lambda: tv("mobilenet_v2", num_classes=20), 48),
    ],
    ids=["cnn", "resnet18", "vgg11", "mobilenet_v2"],
)
def test_mct_scores_and_pathway_gradient_match_masked_copy(factory, size):
    model = factory()
    x = rand_x(2, size)
    ex = PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.6)
    # every site lies on the path from the logit to the first one: the scores were
    # computed inside the backward, by hooks on the site outputs
    assert ex._state.scores_in_backward is True
    tgt = e.target
    ref_scores = ref.mct_scores(model, x, tgt)
    assert len(ref_scores) == len(e.scores)
    for a, b in zip(e.scores, ref_scores, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-10)
    g = ref.masked_gradient(model, x, tgt, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()) + 1e-10)
    assert torch.allclose(e.pathway_logits, ref.masked_model(model, e.pathway.masks)(x), atol=1e-4)


def test_gradient_matches_captum_saliency():
    from captum.attr import Saliency

    model = small_cnn()
    x = rand_x(3)
    ex = PathwayExplainer(model)
    tgt = torch.tensor([1, 4, 7])
    ours = ex.gradient(x, tgt)
    theirs = Saliency(model).attribute(x, target=tgt, abs=False)
    torch.testing.assert_close(ours, theirs)


def test_mct_matches_captum_layer_grad_x_activation():
    from captum.attr import LayerGradientXActivation

    model = small_cnn()
    x = rand_x(2)
    e = PathwayExplainer(model).explain(x, target=3)
    for layer, site in [(model[1], 0), (model[3], 1), (model[9], 3)]:
        theirs = LayerGradientXActivation(model, layer).attribute(x, target=3).abs()
        torch.testing.assert_close(e.scores[site], theirs, rtol=1e-4, atol=1e-7)


def test_sparsity_zero_equals_plain_gradient(resnet):
    x = rand_x(2, 48)
    ex = PathwayExplainer(resnet)
    e = ex.explain(x, sparsity=0.0)
    assert bool(e.pathway.flat.all())
    torch.testing.assert_close(e.saliency, ex.gradient(x))
    torch.testing.assert_close(e.saliency, ref.plain_gradient(resnet, x, e.target))
    torch.testing.assert_close(e.pathway_logits, e.logits)


def test_finite_difference_matches_pathway_gradient():
    """The paper's local linearity: the restricted network's directional derivative."""
    model = small_cnn(torch.float64)
    x = rand_x(1, dtype=torch.float64)
    e = PathwayExplainer(model).explain(x, sparsity=0.8)
    f = ref.masked_model(model, e.pathway.masks)
    t = int(e.target)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        d /= d.norm()
        h = 1e-6
        fd = (f(x + h * d)[0, t] - f(x - h * d)[0, t]) / (2 * h)
        assert math.isclose(
            float(fd.detach()), float((e.saliency * d).sum()), rel_tol=1e-5, abs_tol=1e-9
        )


def test_batch_equals_samples_one_by_one(resnet):
    # float64 so that batched and single convolutions agree far below score gaps
    model = tv("resnet18", num_classes=20).double()
    x = rand_x(3, 48, dtype=torch.float64)
    ex = PathwayExplainer(model)
    for method, opts in [("neuron_mct", {}), ("neuron_intgrad", {"steps": 3})]:
        eb = ex.explain(x, method=method, sparsity=0.7, **opts)
        for i in range(3):
            ei = ex.explain(x[i : i + 1], method=method, sparsity=0.7, **opts)
            assert torch.equal(eb.pathway.flat[i], ei.pathway.flat[0]), method
            for a, b in zip(eb.scores, ei.scores, strict=True):
                torch.testing.assert_close(a[i : i + 1], b, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(eb.saliency[i : i + 1], ei.saliency, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.7, 0.9, 0.99])
def test_global_scope_keeps_exactly_the_top_scores(resnet, sparsity):
    x = rand_x(2, 48)
    e = PathwayExplainer(resnet).explain(x, sparsity=sparsity)
    total = e.pathway.neurons
    k = keep_count(total, sparsity)
    assert k == round((1 - sparsity) * total)
    assert e.pathway.kept.tolist() == [k, k]
    flat = torch.cat([s.reshape(2, -1) for s in e.scores], 1)
    assert torch.equal(e.pathway.flat, ref.topk_mask_sort(flat, k))


def test_selection_on_large_rows_with_ties_matches_full_sort(monkeypatch):
    from critpath_widgets.engine.pathway import kernels

    g = torch.Generator().manual_seed(0)
    s = torch.rand(4, 400_000, generator=g) ** 3
    s[:3, :150_000] = 0.0  # dead neurons: massive ties at zero
    s[1, 200_000:200_100] = 0.5  # a tie block inside the range
    s[3, 50_000:250_000] = 0.25  # a massive tie above zero
    # ties at the threshold are resolved by position without the exact sort
    monkeypatch.setattr(kernels, "_exact_small", lambda *a: pytest.fail("exact sort used"))
    for k in [1, 1000, 123_457, 250_000, 260_000, 399_999]:
        want = ref.topk_mask_sort(s, k)
        assert torch.equal(kernels.topk_mask(s, k), want), k
        assert torch.equal(kernels.topk_mask(s, k, torch.float32), want.float()), k


def test_chunked_band_and_long_bands_match_a_full_sort(monkeypatch):
    """Rows done chunk by chunk (hardtanh's backward marks the band), bands long enough to
    be bracketed again inside, ties in and around them, and rows whose bracket floor is
    negative (two comparisons instead), each against a full stable sort."""
    from critpath_widgets.engine.pathway import kernels

    monkeypatch.setattr(kernels, "_CHUNK", 170_001)  # many chunks, the last one short
    monkeypatch.setattr(kernels, "_exact_small", lambda *a: pytest.fail("exact sort used"))
    g = torch.Generator().manual_seed(5)
    s = torch.rand(3, 1_000_000, generator=g) ** 2
    s[0, ::7] = 0.0  # dead neurons
    s[1, 100_000:100_500] = s[1, 3]  # a tie block at an ordinary value
    s[2] -= 0.5  # negative scores: the bracket floor is below 0
    calls = []
    kth = kernels._kth_largest
    monkeypatch.setattr(kernels, "_kth_largest", lambda v, q: calls.append(v.numel()) or kth(v, q))
    for k in (7, 60_000, 500_000, 999_000):
        want = ref.topk_mask_sort(s, k)
        assert torch.equal(kernels.topk_mask(s, k), want), k
        assert torch.equal(kernels.topk_mask(s, k, torch.float32), want.float()), k
    assert max(calls) >= 16 * kernels._MIN_SAMPLE  # the bracket inside a band was used


def test_ties_at_the_bracket_ceiling_stay_in_the_band(monkeypatch):
    """The k-th largest equal to the bracket's top, with ties there: the tied entries are
    in the band (lo < s <= hi), so the first ones by position are kept and no exact
    fallback is needed."""
    from critpath_widgets.engine.pathway import kernels

    g = torch.Generator().manual_seed(8)
    s = torch.rand(1, 300_000, generator=g)
    s[0, 1000:60_000:3] = 0.5  # about 20,000 ties at 0.5
    k = int((s > 0.5).sum()) + 5_000  # the k-th largest is 0.5, inside the tie block
    monkeypatch.setattr(
        kernels, "_bracket", lambda sc, kk: (torch.tensor([0.45]), torch.tensor([0.5]))
    )
    monkeypatch.setattr(kernels, "_exact_small", lambda *a: pytest.fail("exact sort used"))
    assert torch.equal(kernels.topk_mask(s, k), ref.topk_mask_sort(s, k))


def test_kth_largest_matches_a_sort_also_when_its_inner_bracket_misses(monkeypatch):
    from critpath_widgets.engine.pathway import kernels

    g = torch.Generator().manual_seed(6)
    v = torch.rand(100_000, generator=g)
    v[5_000:6_000] = 0.5
    want = torch.sort(v, descending=True).values
    for q in (1, 2, 30_000, 44_500, 45_000, 99_999, 100_000):
        assert float(kernels._kth_largest(v, q)) == float(want[q - 1]), q
    # an inner bracket that holds none of the wanted rank: the full selection answers
    monkeypatch.setattr(
        kernels, "_sample_bracket", lambda sample, p: (torch.tensor([0.9]), torch.tensor([0.95]))
    )
    assert float(kernels._kth_largest(v, 70_000)) == float(want[69_999])


def test_segment_selection_matches_a_full_sort_of_each_segment():
    """Per-layer selection: every column segment of every row keeps its own top k, with
    segments short enough for the exact path next to sampled ones, ties at zero and
    segments kept whole or dropped whole."""
    from critpath_widgets.engine.pathway.kernels import topk_segments

    g = torch.Generator().manual_seed(3)
    sizes = [10, 5_000, 300_000, 20_000, 1, 70_000]
    s = torch.rand(3, sum(sizes), generator=g) ** 3
    s[:, 5_010:100_000] = 0.0  # dead neurons across two segments
    s[2, 400_000:401_000] = 0.125  # a tie block in the 70_000 segment
    for share in (0.05, 0.3, 0.7, 1.0):
        segments, o = [], 0
        for i, n in enumerate(sizes):
            k = 0 if i == 3 and share < 0.1 else round(share * n)
            segments.append((o, o + n, k))
            o += n
        for dtype in (torch.bool, torch.float32):
            got = topk_segments(s, segments, dtype)
            assert got.dtype == dtype
            for a, b, k in segments:
                want = ref.topk_mask_sort(s[:, a:b], k)
                assert torch.equal(got[:, a:b].bool(), want), (share, a, k)


def test_selection_falls_back_to_an_exact_sort_when_the_sample_bracket_misses(monkeypatch):
    from critpath_widgets.engine.pathway import kernels

    g = torch.Generator().manual_seed(1)
    s = torch.rand(4, 300_000, generator=g)
    k = 100_000
    lo, hi = kernels._bracket(s, k)
    # rows 1 and 3 get a bracket that holds too few entries (their k-th value lies below)
    lo[1], hi[1] = 0.9, 0.95
    lo[3], hi[3] = 0.1, 0.2
    monkeypatch.setattr(kernels, "_bracket", lambda scores, kk: (lo, hi))
    assert torch.equal(kernels.topk_mask(s, k), ref.topk_mask_sort(s, k))


def test_layer_scope_keeps_same_share_per_site(resnet):
    x = rand_x(1, 48)
    e = PathwayExplainer(resnet).explain(x, sparsity=0.75, scope="layer")
    for sc, m in zip(e.scores, e.pathway.masks, strict=True):
        k = keep_count(m[0].numel(), 0.75)
        assert int(m.sum()) == k
        assert torch.equal(m.reshape(1, -1), ref.topk_mask_sort(sc.reshape(1, -1), k))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_channel_granularity_keeps_whole_channels(resnet, scope):
    x = rand_x(1, 48)
    e = PathwayExplainer(resnet).explain(x, sparsity=0.6, scope=scope, granularity="channel")
    chans = []
    for sc, m in zip(e.scores, e.pathway.masks, strict=True):
        per = m[0].reshape(m.shape[1], -1)
        assert bool((per.all(1) | ~per.any(1)).all()), "a channel is partly kept"
        chans.append((sc[0].reshape(sc.shape[1], -1).sum(1), per.all(1)))
    if scope == "global":
        cs = torch.cat([c for c, _ in chans])[None]
        kept = torch.cat([k for _, k in chans])[None]
        assert torch.equal(kept, ref.topk_mask_sort(cs, keep_count(cs.shape[1], 0.6)))
    else:
        for c, k in chans:
            assert int(k.sum()) == keep_count(c.numel(), 0.6)


def test_at_sparsity_reuses_scores_and_matches_fresh(resnet, monkeypatch):
    x = rand_x(1, 48)
    ex = PathwayExplainer(resnet)
    e = ex.explain(x, sparsity=0.5)
    calls = []
    orig = passes.score_pass
    monkeypatch.setattr(passes, "score_pass", lambda *a, **k: calls.append(1) or orig(*a, **k))
    e2 = e.at_sparsity(0.9)
    assert not calls, "at_sparsity re-scored"
    assert e2.scores[0] is not None and e2.sparsity == 0.9
    fresh = ex.explain(x, sparsity=0.9)
    assert torch.equal(e2.pathway.flat, fresh.pathway.flat)
    torch.testing.assert_close(e2.saliency, fresh.saliency)


# ---------------------------------------------------------------- methods
@pytest.mark.parametrize(
    "factory,size",
    [
        (small_cnn, 16),
        (lambda: tv("resnet18", num_classes=10), 32),
        (lambda: tv("mobilenet_v2", num_classes=10), 32),
        # 48 px: at 32 px vgg11's last map is 1x1 and this input puts pre-activations so
        # close to 0 that float32 itself (the loop included) is 1e-2 off a float64 loop
        (lambda: tv("vgg11", num_classes=10), 48),
    ],
    ids=["cnn", "resnet18", "mobilenet_v2", "vgg11"],
)
def test_intgrad_equals_straightforward_loop(factory, size):
    model = factory()
    x = rand_x(1, size)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="neuron_intgrad", steps=4, sparsity=0.5)
    want = ref.intgrad_scores_loop(model, x, e.target, steps=4)
    for a, b in zip(e.scores, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-10)


def _vgg_like() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),  # reads the site: shortcut, no bias
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),  # reads the site: shortcut with bias
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # does not commute with alpha = 0's ties: no shortcut
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),  # identity in eval: the Linear after it reads the site
        nn.Linear(32, 10),
    )
    model[3].running_mean.uniform_(-0.2, 0.2)
    model[3].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("foreign_hook", [False, True])
def test_intgrad_affine_shortcut_is_exact_and_steps_aside_for_foreign_hooks(
    foreign_hook, monkeypatch
):
    from critpath_widgets.engine import affine

    model = _vgg_like()
    seen: list[int] = []
    if foreign_hook:  # a user's hook must see the real alpha batch, not our batch-1 input
        model[5].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    before = ref.model_state(model)
    taken: set[int] = set()  # indices of the layers that took the shortcut
    orig = affine.AffineShortcut._post

    def post(self, m, args, out):
        r = orig(self, m, args, out)
        if r is not None:  # by position in what ran: the folded twin, or the model itself
            taken.add(list(ex.network).index(m))
        return r

    monkeypatch.setattr(affine.AffineShortcut, "_post", post)
    x = rand_x(1, 16)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="neuron_intgrad", steps=4)
    want = ref.intgrad_scores_loop(model, x, e.target, steps=4)
    for a, b in zip(e.scores, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-10)
    # the layers that read a site directly; a hooked one runs normally
    assert taken == ({2, 12} if foreign_hook else {2, 5, 12})
    if foreign_hook:
        assert 4 in seen  # the hook saw the batch of alphas (4 of them, alpha = 1 aside)
    ref.assert_same_state(before, ref.model_state(model))


def test_intgrad_small_chunks_and_batch_agree(resnet):
    x = rand_x(2, 32)
    ex = PathwayExplainer(resnet)
    a = ex.explain(x, method="neuron_intgrad", steps=5, batch_size=3)
    b = ex.explain(x, method="neuron_intgrad", steps=5, batch_size=64)
    for s, t in zip(a.scores, b.scores, strict=True):
        torch.testing.assert_close(s, t, rtol=1e-4, atol=1e-7)


def test_greedy_keeps_exact_count_and_removes_low_scores_first():
    model = small_cnn()
    x = rand_x(1)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="greedy", sparsity=0.3, step_fraction=0.1)
    total = e.pathway.neurons
    assert int(e.pathway.kept) == keep_count(total, 0.3)
    mct = torch.cat([s.reshape(1, -1) for s in ex.explain(x, sparsity=0.0).scores], 1)
    first_round = torch.cat([s.reshape(1, -1) for s in e.scores], 1) == 0
    step = round(0.1 * total)
    assert int(first_round.sum()) == step
    assert torch.equal(first_round, ~ref.topk_mask_sort(mct, total - step))
    # selecting from the ranking at a lower sparsity gives that round's pathway
    e10 = e.at_sparsity(0.1)
    assert int(e10.pathway.kept) == total - step and torch.equal(e10.pathway.flat, ~first_round)


def test_random_is_seeded():
    model = small_cnn()
    x = rand_x(1)
    ex = PathwayExplainer(model)
    a = ex.explain(x, method="random", seed=1)
    b = ex.explain(x, method="random", seed=1)
    c = ex.explain(x, method="random", seed=2)
    assert torch.equal(a.pathway.flat, b.pathway.flat)
    assert not torch.equal(a.pathway.flat, c.pathway.flat)
    assert int(a.pathway.kept) == keep_count(a.pathway.neurons, 0.7)


def test_saliency_map_reductions():
    model = small_cnn()
    x = rand_x(2)
    e = PathwayExplainer(model).explain(x)
    s = e.saliency
    m = e.saliency_map()
    assert m.shape == (2, 16, 16)
    i = s.abs().argmax(1, keepdim=True)
    assert torch.equal(m, s.gather(1, i)[:, 0])
    assert torch.equal(e.saliency_map("abs_sum"), s.abs().sum(1))
    torch.testing.assert_close(e.saliency_map("x_input"), (s * x).sum(1))
    with pytest.raises(OptionError):
        e.saliency_map("mean")


def test_layer_summary_and_site_map(resnet):
    x = rand_x(1, 48)
    e = PathwayExplainer(resnet).explain(x, sparsity=0.8)
    summ = e.layer_summary()
    assert [s.name for s in summ] == e.site_names
    assert sum(s.kept for s in summ) == int(e.pathway.kept)
    for s, sc, m in zip(summ, e.scores, e.pathway.masks, strict=True):
        assert s.neurons == m[0].numel()
        assert math.isclose(s.total, float(sc.sum()), rel_tol=1e-4)
        assert math.isclose(s.kept_total, float((sc * m).sum()), rel_tol=1e-4, abs_tol=1e-12)
        assert s.kept_total <= s.total * (1 + 1e-6)
        torch.testing.assert_close(
            s.channel_total.sum(), torch.tensor(s.total), rtol=1e-4, atol=1e-9
        )
    torch.testing.assert_close(e.site_map(0), e.scores[0][0].sum(0))
    with pytest.raises(InputError):
        e.site_map(99)


def test_site_names_count_calls_of_reused_modules(resnet):
    e = PathwayExplainer(resnet).explain(rand_x(1, 32))
    names = e.site_names
    assert names[0] == "relu"
    assert "layer1.0.relu" in names and "layer1.0.relu#2" in names
    # BasicBlock calls its relu twice: 1 stem + 8 blocks x 2
    assert len(names) == 17


def test_sites_argument_forms():
    model = small_cnn()
    x = rand_x(1)
    assert len(PathwayExplainer(model, sites=nn.ReLU).explain(x).scores) == 2
    assert PathwayExplainer(model, sites=["3"]).explain(x).site_names == ["3"]
    p = PathwayExplainer(model, sites=lambda n, m: isinstance(m, nn.ReLU6))
    assert p.explain(x).site_names == ["6"]
    with pytest.raises(ModelError, match="not found"):
        PathwayExplainer(model, sites=["nope"])
    with pytest.raises(InputTypeError):
        PathwayExplainer(model, sites=3.5)


def test_prelu_and_hardtanh_sites_and_inplace_write_after_site():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3)
            self.a1 = nn.PReLU()
            self.c2 = nn.Conv2d(4, 4, 3)
            self.a2 = nn.Hardtanh(inplace=True)
            self.fc = nn.Linear(4 * 12 * 12, 5)

        def forward(self, x):
            x = self.a1(self.c1(x))
            x = self.a2(self.c2(x))
            x.mul_(2.0)  # writes into the site's output after the hook has seen it
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    model = Net().eval()
    x = rand_x(2)
    e = PathwayExplainer(model).explain(x, sparsity=0.5)
    assert e.site_names == ["a1", "a2"]
    for a, b in zip(e.scores, ref.mct_scores(model, x, e.target), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- model left untouched
def test_model_left_exactly_as_it_was_after_calls_and_errors(resnet):
    model = tv("resnet18", num_classes=20)
    model.train()
    model.layer1.eval()  # mixed modes must be restored module by module
    for p in model.layer4.parameters():
        p.requires_grad_(False)
    h = model.fc.register_forward_hook(lambda *a: None)
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    x = rand_x(2, 32)
    e = ex.explain(x, method="neuron_mct")
    e.at_sparsity(0.9)
    ex.explain(x, method="neuron_intgrad", steps=2)
    ex.explain(x[:1], method="neuron_intgrad", steps=2)
    ex.explain(x, method="greedy", sparsity=0.05, step_fraction=0.02)
    ex.explain(x, method="random")
    ex.gradient(x)
    ref.assert_same_state(before, ref.model_state(model))
    # errors raised before, during and after the forward pass
    for kw in [dict(target=99), dict(sparsity=1.0), dict(method="nope"), dict(bogus=1)]:
        with pytest.raises(CritpathError):
            ex.explain(x, **kw)
        ref.assert_same_state(before, ref.model_state(model))

    def cancel(done, total):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ex.explain(x, method="neuron_intgrad", steps=2, progress=cancel)
    ref.assert_same_state(before, ref.model_state(model))
    assert model.training and not model.layer1.training
    h.remove()


def test_train_mode_model_is_explained_in_eval_behaviour():
    model = tv("resnet18", num_classes=10)
    x = rand_x(1, 32)
    e_eval = PathwayExplainer(model).explain(x)
    model.train()
    e_train = PathwayExplainer(model).explain(x)
    assert model.training
    torch.testing.assert_close(e_train.saliency, e_eval.saliency)


def test_explain_works_under_no_grad_and_inference_mode():
    model = small_cnn()
    x = rand_x(1)
    want = PathwayExplainer(model).explain(x).saliency
    with torch.no_grad():
        a = PathwayExplainer(model).explain(x).saliency
    with torch.inference_mode():
        b = PathwayExplainer(model).explain(x).saliency
    torch.testing.assert_close(a, want)
    torch.testing.assert_close(b, want)


# ---------------------------------------------------------------- bad input
class _BranchNet(nn.Module):
    """Two branches from the input, a site on the input itself, a site whose output the
    logits never read, and a site reused on the merged branches."""

    def __init__(self):
        super().__init__()
        self.a_conv, self.b_conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2)
        self.a_relu, self.b_relu6 = nn.ReLU(), nn.ReLU6()
        self.in_relu = nn.ReLU()
        self.dead = nn.LeakyReLU(0.2)
        self.merge = nn.Conv2d(11, 5, 3, padding=1)
        self.shared = nn.ReLU()
        self.fc = nn.Linear(5 * 8 * 8, 6)

    def forward(self, x):
        a = self.a_relu(self.a_conv(x))
        b = self.b_relu6(self.b_conv(x))
        self.dead(a * 2.0)  # computed, never read
        h = self.shared(self.merge(torch.cat([a, b, self.in_relu(x)], dim=1)))
        h = self.shared(h) + 0.1 * h  # the shared module called twice
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


def test_scores_of_branches_dead_and_input_sites_match_autograd():
    """Scores of sites on parallel branches, on the input itself, reused, and never read
    by the logits (those score 0) equal autograd's on an instrumented copy."""
    torch.manual_seed(0)
    model = _BranchNet().double().eval()
    x = rand_x(2, 16, dtype=torch.float64)
    ex = PathwayExplainer(model)
    first = ex.explain(x, sparsity=0.5)
    # b_relu6 is not upstream of the first site a_relu: the backward to it leaves that
    # gradient out, so the pass is redone with captured gradients, and from then on
    assert ex._state.scores_in_backward is False
    e = ex.explain(x, sparsity=0.5)
    assert all(torch.equal(a, b) for a, b in zip(first.scores, e.scores, strict=True))
    assert e.site_names == ["a_relu", "b_relu6", "dead", "in_relu", "shared", "shared#2"]

    # everything against retain_grad on an instrumented copy (the dead site has no grad)
    m, ctl = ref.instrumented_copy(model)
    seen: list[torch.Tensor] = []

    def rec(i, a):
        a.retain_grad()
        seen.append(a)
        return a

    out = ref.run(m, ctl, x.clone().requires_grad_(True), rec)
    out.gather(1, e.target[:, None]).sum().backward()
    for i, (got, a) in enumerate(zip(e.scores, seen, strict=True)):
        want = torch.zeros_like(a) if a.grad is None else (a * a.grad).abs()
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12, msg=f"site {i}")
    assert float(e.scores[2].abs().sum()) == 0.0 and float(e.scores[0].sum()) > 0
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_is_reported_and_model_untouched(reentrant):
    """A model that recomputes part of its forward in the backward (torch.utils.checkpoint)
    cannot be followed by the site hooks: a ModelError that says so, model unchanged."""
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.r1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
            self.c2, self.r2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
            self.fc = nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            h = self.r1(self.c1(x))
            h = checkpoint(lambda t: self.r2(self.c2(t)), h, use_reentrant=reentrant)
            return self.fc(h.flatten(1))

    model = Net().eval()
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    with pytest.raises(ModelError, match="checkpointing"):
        ex.explain(torch.randn(1, 3, 8, 8))
    ref.assert_same_state(before, ref.model_state(model))
    if reentrant:  # torch's reentrant checkpoint refuses torch.autograd.grad altogether
        with pytest.raises(ModelError, match="checkpointing"):
            ex.gradient(torch.randn(1, 3, 8, 8))
    else:  # no site hooks in a plain gradient: it works
        assert ex.gradient(torch.randn(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    ref.assert_same_state(before, ref.model_state(model))


def test_model_without_sites_names_what_it_found():
    """No activation module and no activation function called: the first call says so
    and names the activation types the model does have."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(ModelError, match="Tanh") as ei:
        PathwayExplainer(model).explain(torch.randn(1, 3, 8, 8))
    assert isinstance(ei.value, ValueError)
    assert "F.relu" in str(ei.value)  # functional activations were looked for too
    with pytest.raises(ModelError, match="Tanh"):  # explicit types: said at once
        PathwayExplainer(model, sites=nn.ReLU)


def test_unused_site_module_is_reported():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ModelError, match="never used"):
        PathwayExplainer(Net()).explain(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize(
    "x,kw,exc,match",
    [
        (torch.randn(3, 16, 16), {}, InputError, "4-D"),
        (torch.randn(1, 1, 16, 16), {}, InputError, "channels"),
        (torch.full((1, 3, 16, 16), float("nan")), {}, InputError, "NaN"),
        (torch.ones(1, 3, 16, 16, dtype=torch.long), {}, InputTypeError, "floating"),
        ([[1.0]], {}, InputTypeError, "torch.Tensor"),
        (None, {"target": 10}, InputError, "out of range"),
        (None, {"target": -1}, InputError, "out of range"),
        (None, {"target": [1, 2]}, InputError, "entries"),
        (None, {"target": 1.5}, InputTypeError, "target"),
        (None, {"target": np.float32(1.0)}, InputTypeError, "numpy float32"),
        (None, {"target": np.int64(10)}, InputError, "out of range"),
        (None, {"sparsity": 1.0}, InputError, r"\[0, 1\)"),
        (None, {"sparsity": -0.1}, InputError, r"\[0, 1\)"),
        (None, {"sparsity": "a"}, InputError, "sparsity"),
        (None, {"method": "deeplift"}, OptionError, "unknown method"),
        (None, {"scope": "local"}, OptionError, "scope"),
        (None, {"granularity": "pixel"}, OptionError, "granularity"),
        (None, {"steps": 5}, OptionError, "neuron_intgrad"),
        (None, {"method": "neuron_intgrad", "steps": 0}, InputError, "positive"),
    ],
)
def test_bad_input_raises_clear_errors(x, kw, exc, match):
    model = small_cnn()
    before = ref.model_state(model)
    x = rand_x(1) if x is None else x
    with pytest.raises(exc, match=match) as ei:
        PathwayExplainer(model).explain(x, **kw)
    assert isinstance(ei.value, CritpathError)
    assert isinstance(ei.value, (ValueError, TypeError))
    ref.assert_same_state(before, ref.model_state(model))


class _SqrtNet(nn.Module):
    """sqrt after a ReLU: an infinite gradient where the ReLU output is 0, so 0 * inf = NaN
    contribution scores at the first site."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 4, 3), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3), nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.sqrt(self.relu1(self.conv1(x)))
        return self.fc(self.relu2(self.conv2(h)).mean((2, 3)))


@pytest.mark.parametrize("in_backward", [True, False])
@pytest.mark.parametrize("method", ["neuron_mct", "neuron_intgrad", "random"])
def test_non_finite_scores_are_reported(in_backward, method):
    """Scores made inside the backward are checked there (their sums taken while in the
    cache); scores from captured gradients and other methods' scores after the pass."""
    torch.manual_seed(0)
    model = _SqrtNet()
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    if not in_backward:
        ex._state.scores_in_backward = False
    with pytest.raises(InputError, match="not finite") as ei:
        ex.explain(rand_x(1), method=method)
    where = {f.name for f in traceback.extract_tb(ei.tb)}
    assert ("scores_in_backward" in where) == (in_backward and method != "neuron_intgrad")
    ref.assert_same_state(before, ref.model_state(model))


def test_engine_does_not_import_widgets():
    import subprocess
    import sys

    code = (
        "import sys, critpath_widgets as c; c.PathwayExplainer; "
        "assert 'ipywidgets' not in sys.modules and 'anywidget' not in sys.modules, "
        "sorted(m for m in sys.modules if 'widget' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- the real default model
@pytest.fixture(scope="module")
def default_bundle():
    return cw.load_model()


def test_default_model_explains_coffee_as_espresso(default_bundle):
    b = default_bundle
    img = cw.sample_image("coffee")
    x = b.preprocess(img)[None]
    ex = PathwayExplainer(b.model)
    e = ex.explain(x, sparsity=0.7)
    assert b.categories[int(e.target)] == "espresso"
    assert len(e.site_names) == 33 and e.pathway.neurons > 6_000_000
    assert int(e.pathway.kept) == round(0.3 * e.pathway.neurons)
    # the pathway keeps most of the answer; a random pathway of the same size does not
    r = ex.explain(x, sparsity=0.7, method="random")
    t = int(e.target)
    assert float(e.pathway_logits[0, t]) > float(r.pathway_logits[0, t])
    # the pathway gradient concentrates on the cup: more mass in the centre than the border
    m = e.saliency_map("abs_sum")[0]
    centre = m[56:168, 56:168].mean()
    border = torch.cat([m[:28].flatten(), m[-28:].flatten()]).mean()
    assert float(centre) > float(border)


def test_sample_images_and_model_errors():
    names = cw.sample_images()
    assert {"coffee", "chelsea", "grace_hopper"} <= set(names)
    im = cw.sample_image("chelsea")
    assert im.mode == "RGB"
    with pytest.raises(InputError, match="available"):
        cw.sample_image("nope")
    with pytest.raises(InputError, match="unknown model"):
        cw.load_model("not_a_model")
    with pytest.raises(InputError, match="not found"):
        cw.load_model("resnet18", weights="/nonexistent.pt")


def test_torchvision_weights_file_loads_with_weights_only(tmp_path):
    m = tv("resnet18")
    p = tmp_path / "r18.pt"
    torch.save(m.state_dict(), p)
    b = cw.load_model("resnet18", weights=p)
    assert not b.model.training
    assert torch.equal(b.model.fc.weight, m.fc.weight)
    assert b.preprocess(cw.sample_image("coffee")).shape == (3, 224, 224)
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="do not fit"):
        cw.load_model("resnet18", weights=bad)


def test_sorted_ranking_matches_full_sort_with_ties():
    from critpath_widgets.engine.pathway.kernels import Ranking

    g = torch.Generator().manual_seed(1)
    s = torch.rand(2, 300_000, generator=g) ** 4
    s[:, :100_000] = 0.0
    s[0, 150_000:150_050] = 0.25
    r = Ranking(s)
    assert r.usable
    for k in [1, 5_000, 123_456, 200_000, 250_000, 299_999]:
        assert torch.equal(r.mask(k), ref.topk_mask_sort(s, k)), k
        w = r.weights(k)
        assert (
            w.dtype == s.dtype
            and torch.equal(w.bool(), r.mask(k))
            and set(w.unique().tolist()) <= {0.0, 1.0}
        )
        assert torch.equal(r.mask(k, 1000, 200_000), ref.topk_mask_sort(s[:, 1000:200_000], k)), k
    assert not Ranking(-s).usable  # negative values: the bit trick does not apply


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_at_sparsity_fast_path_matches_fresh_selection(resnet, scope, monkeypatch):
    """Global scope compares each site's scores with the threshold as the masked pass
    reaches the site (ResNet's in-place ReLUs keep each site's weights for the backward:
    writing one site's weights must not mark another's as modified)."""
    from critpath_widgets.engine.pathway.kernels import Ranking

    thresholds = []
    threshold = Ranking.threshold
    monkeypatch.setattr(Ranking, "threshold", lambda *a: thresholds.append(t := threshold(*a)) or t)
    x = rand_x(2, 48)
    ex = PathwayExplainer(resnet)
    e = ex.explain(x, sparsity=0.3, scope=scope)
    e.prepare_sparsity_changes()
    for s in [0.0, 0.5, 0.95, 0.3]:
        a = e.at_sparsity(s)
        b = ex.explain(x, sparsity=s, scope=scope)
        assert torch.equal(a.pathway.flat, b.pathway.flat), s
        torch.testing.assert_close(a.saliency, b.saliency)
        g = ref.masked_gradient(resnet, x, a.target, a.pathway.masks)
        torch.testing.assert_close(a.saliency, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()))
    if scope == "global":  # the per-site comparison was used where no tie needs a cut
        assert any(t is not None for t in thresholds)


class _Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)  # called twice per block

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x  # in place, into a module's output
        return self.relu(out)


class _BatchCapturing(nn.Module):
    """Reads the batch size from its input, like EfficientNet's ``x.view(bs, -1)``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.ModuleList([_Block(8), _Block(8)])
        self.head = nn.ReLU6()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        bs = x.size(0)
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return self.fc(self.head(h).mean((2, 3)).view(bs, -1))


@pytest.mark.parametrize("n", [1, 2])
def test_intgrad_prefix_replay_on_a_model_that_reads_its_batch_size(n):
    torch.manual_seed(0)
    model = _BatchCapturing()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    before = ref.model_state(model)
    x = rand_x(n, 12)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="neuron_intgrad", steps=4, batch_size=3)
    intgrad = ex.scorer("neuron_intgrad")
    assert intgrad.broadcast_ok is not True and intgrad.replay_ok is True
    want = ref.intgrad_scores_loop(model, x, e.target, steps=4)
    for a, b in zip(e.scores, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-10)
    ref.assert_same_state(before, ref.model_state(model))


# ---------------------------------------------------------------- buffers and in-place scaling
def test_recycled_buffers_behave_like_torch_empty(monkeypatch):
    from critpath_widgets.engine import memory

    monkeypatch.setattr(memory, "RECYCLE_BYTES", 0)  # every CPU buffer takes the mmap path
    for dtype in (torch.float32, torch.bool, torch.float64):
        t = memory.empty((3, 5, 7), dtype, "cpu")
        assert t.shape == (3, 5, 7) and t.dtype == dtype and t.is_contiguous()
        t.fill_(1)
        assert int(t.sum()) == 105
    like = memory.empty_like(torch.zeros(4, 2, dtype=torch.float16))
    assert like.shape == (4, 2) and like.dtype == torch.float16


@pytest.mark.parametrize(
    "factory,size",
    [
        (lambda: tv("resnet18", num_classes=20), 48),
        (lambda: tv("mobilenet_v2", num_classes=20), 48),
    ],
    ids=["resnet18", "mobilenet_v2"],
)
def test_pathway_gradient_through_recycled_scaling_matches_masked_copy(factory, size, monkeypatch):
    """With every buffer recycled (selection, weights, and the masked pass's own autograd
    function for outputs that cannot be scaled in place) the results still equal autograd
    on an explicitly masked copy."""
    from critpath_widgets.engine import memory

    monkeypatch.setattr(memory, "RECYCLE_BYTES", 0)
    model = factory()
    x = rand_x(2, size)
    e = PathwayExplainer(model).explain(x, sparsity=0.6)
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()) + 1e-10)
    for s in (0.3, 0.9):
        f = e.at_sparsity(s)
        g = ref.masked_gradient(model, x, e.target, f.pathway.masks)
        torch.testing.assert_close(
            f.saliency, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()) + 1e-10
        )


def test_in_place_scaling_leaves_users_own_hook_outputs_alone():
    """ReLU6 outputs are scaled in place only when nobody else has seen them: a user's
    forward hook on the same module keeps the unmasked output of what it saw go in."""
    model = small_cnn()
    x = rand_x(1, 16)
    relu6 = model[6]
    assert isinstance(relu6, nn.ReLU6) and not relu6.inplace
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = relu6.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    try:
        e = PathwayExplainer(model).explain(x, sparsity=0.9)
    finally:
        handle.remove()
    assert len(seen) == 2  # score pass and masked pass
    for inp, out in seen:
        assert torch.equal(out.detach(), nn.functional.relu6(inp.detach()))
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()) + 1e-10)


class _GateNet(nn.Module):
    """Every kind of site the masked pass treats differently: input masked in place
    before the call (ReLU, ReLU6, Hardtanh with min_val 0, in-place ReLU, on 4-D and 2-D
    outputs), output gated (a ReLU whose input is read again afterwards, a ReLU6 fed by
    a ReLU, which keeps its output for its backward), and neither (Hardtanh below 0,
    LeakyReLU)."""

    def __init__(self):
        super().__init__()
        self.c = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(6))
        self.relu = nn.ReLU()
        self.neg_tanh = nn.Hardtanh(-1.0, 1.0)
        self.pos_tanh = nn.Hardtanh(0.0, 2.0)
        self.relu6 = nn.ReLU6()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.after_relu = nn.ReLU6()
        self.leaky = nn.LeakyReLU(0.1)
        self.fc1 = nn.Linear(6 * 8 * 8, 16)
        self.fc_relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 7)

    def forward(self, x):
        h = self.c[0](x)
        x = self.relu(h) + 0.5 * h  # h is read again after the site
        x = self.neg_tanh(self.c[1](x))
        x = self.pos_tanh(self.c[2](x))
        x = self.relu6(self.c[3](x))
        x = self.after_relu(self.relu_inplace(self.c[4](x)) * 1.5)
        x = self.after_relu(torch.relu(self.c[5](x)))  # torch.relu keeps its output
        x = nn.functional.max_pool2d(self.leaky(x), 2)
        return self.fc2(self.fc_relu(self.fc1(x.flatten(1))))


def _count_mask_paths(monkeypatch) -> tuple[list[str], list[str]]:
    """Record, per masked pass, the sites gated on their output and the calls whose
    input was masked in place (by module class and bounds)."""
    gated: list[str] = []
    premasked: list[str] = []
    real_apply, real_ok = masking.MaskedGate.apply, masking.premask_ok

    def gate(x, y, lo, hi):
        gated.append("relu" if hi is None else f"tanh{lo:g},{hi:g}")
        return real_apply(x, y, lo, hi)

    def ok(module, args, w):
        r = real_ok(module, args, w)
        if r:
            premasked.append(type(module).__name__ + ("_" if module.inplace else ""))
        return r

    monkeypatch.setattr(masking.MaskedGate, "apply", gate)
    monkeypatch.setattr(masking, "premask_ok", ok)
    return gated, premasked


def test_masked_pass_paths_are_exact_where_taken_and_step_aside(monkeypatch):
    """Site inputs are masked in place before the call, or outputs gated by the masked
    output, instead of multiplied by the mask forward and backward: exactly where that
    equals autograd on a masked copy, and never where another reader or a user's hook
    could see the difference."""
    gated, premasked = _count_mask_paths(monkeypatch)
    torch.manual_seed(0)
    model = _GateNet().double().eval()
    x = rand_x(2, 16, dtype=torch.float64)
    before = ref.model_state(model)
    # the module sites only: torch.relu stays a plain op whose node keeps its output
    ex = PathwayExplainer(model, sites=list(DEFAULT_SITE_TYPES))
    e = ex.explain(x, sparsity=0.6)
    assert e.site_names == [
        "relu",
        "neg_tanh",
        "pos_tanh",
        "relu6",
        "relu_inplace",
        "after_relu",
        "after_relu#2",
        "leaky",
        "fc_relu",
    ]
    # after_relu's first call reads a product (which keeps nothing), its second call the
    # output of torch.relu, which ReluBackward keeps: gated there
    assert premasked == ["Hardtanh", "ReLU6", "ReLU_", "ReLU6", "ReLU"]
    assert gated == ["relu", "tanh0,6"]
    for f in (e, e.at_sparsity(0.2), e.at_sparsity(0.95)):
        g = ref.masked_gradient(model, x, f.target, f.pathway.masks)
        torch.testing.assert_close(f.saliency, g, rtol=1e-10, atol=1e-12)
        want = ref.masked_model(model, f.pathway.masks)(x)
        torch.testing.assert_close(f.pathway_logits, want, rtol=1e-10, atol=1e-12)
    ref.assert_same_state(before, ref.model_state(model))

    # a user's hook on the ReLU6 sees its real input and output: no input is masked in
    # place while a user's hook is on (it might hold one), and the ReLU6 is not gated
    gated.clear()
    premasked.clear()
    seen = []
    h = model.relu6.register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o)))
    try:
        e2 = ex.explain(x, sparsity=0.6)
    finally:
        h.remove()
    assert premasked == []
    assert gated == ["relu", "tanh0,2", "tanh0,6", "tanh0,6", "relu"]
    for inp, out in seen:
        assert torch.equal(out.detach(), nn.functional.relu6(inp))
    torch.testing.assert_close(e2.saliency, e.saliency, rtol=1e-10, atol=1e-12)

    # and a global forward pre-hook turns both off everywhere
    gated.clear()
    premasked.clear()
    g_h = nn.modules.module.register_module_forward_pre_hook(lambda m, i: None)
    try:
        e3 = ex.explain(x, sparsity=0.6)
    finally:
        g_h.remove()
    assert gated == [] and premasked == []
    torch.testing.assert_close(e3.saliency, e.saliency, rtol=1e-10, atol=1e-12)


def test_user_hook_on_the_layer_before_a_site_keeps_what_it_saw(monkeypatch):
    """A user's forward hook on the layer that feeds a site keeps that layer's real output
    (it is not masked in place under it), and the explanation is the same."""
    gated, premasked = _count_mask_paths(monkeypatch)
    torch.manual_seed(0)
    model = _GateNet().double().eval()
    x = rand_x(2, 16, dtype=torch.float64)
    ex = PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.6)
    assert premasked
    premasked.clear()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    conv = model.c[3]  # feeds relu6
    h = conv.register_forward_hook(lambda m, i, o: seen.append((i[0].detach().clone(), o)))
    try:
        e2 = ex.explain(x, sparsity=0.6)
    finally:
        h.remove()
    assert premasked == []
    assert len(seen) == 2  # score pass and masked pass
    for inp, out in seen:
        torch.testing.assert_close(out.detach(), conv(inp), rtol=0, atol=0)
    torch.testing.assert_close(e2.saliency, e.saliency, rtol=1e-10, atol=1e-12)


def test_inplace_flag_turned_off_later_takes_the_graph_check_again(monkeypatch):
    """An in-place ReLU is approved for in-place input masking without a look at who else
    reads its input (it overwrites that input anyway); when the user turns ``inplace``
    off later, that approval no longer holds: here the input is then read again."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.fc = nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            h = self.c(x)
            return self.fc((self.act(h) + h).flatten(1))

    gated, premasked = _count_mask_paths(monkeypatch)
    torch.manual_seed(0)
    model = Net().double().eval()
    x = rand_x(2, 8, dtype=torch.float64)
    ex = PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.5)
    assert premasked == ["ReLU_"]
    model.act.inplace = False
    premasked.clear()
    for f in (ex.explain(x, sparsity=0.5), e.at_sparsity(0.3)):
        g = ref.masked_gradient(model, x, f.target, f.pathway.masks)
        torch.testing.assert_close(f.saliency, g, rtol=1e-10, atol=1e-12)
    assert premasked == [] and gated == ["relu", "relu"]


class _KeepsOwnOutput(torch.autograd.Function):
    """exp(x) that keeps its output for its backward, under a name autograd does not use
    for saved outputs: found out by autograd's version check, not beforehand."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


def test_site_input_kept_by_its_maker_is_found_out_and_masked_on_the_output(monkeypatch):
    """An activation fed by a custom function that keeps its own output: the masked pass
    that changed it in place fails autograd's version check, and is run again with the
    output masked instead; the result is exact and later passes skip the in-place path."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.r1, self.r2 = nn.ReLU(), nn.ReLU6()
            self.fc = nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            h = self.r1(self.c1(x))
            h = self.r2(_KeepsOwnOutput.apply(self.c2(h) - 1.0))
            return self.fc(h.flatten(1))

    gated, premasked = _count_mask_paths(monkeypatch)
    torch.manual_seed(0)
    model = Net().double().eval()
    x = rand_x(2, 8, dtype=torch.float64)
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.5)
    assert premasked == ["ReLU", "ReLU6"]  # the first attempt
    assert gated == ["relu", "tanh0,6"]  # the second one, after the version check failed
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)
    premasked.clear()
    f = e.at_sparsity(0.8)
    assert premasked == []
    g = ref.masked_gradient(model, x, f.target, f.pathway.masks)
    torch.testing.assert_close(f.saliency, g, rtol=1e-10, atol=1e-12)
    ref.assert_same_state(before, ref.model_state(model))


def test_activation_on_the_input_leaves_the_callers_tensor_alone():
    """A site that reads the model's input directly: the input is never masked in place
    (the caller's tensor shares its memory with the pass's input)."""
    model = nn.Sequential(
        nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)
    ).double()
    x = rand_x(1, 8, dtype=torch.float64) - 0.5
    x0 = x.clone()
    e = PathwayExplainer(model).explain(x, sparsity=0.7)
    assert torch.equal(x, x0)
    assert not bool(e.pathway.masks[0].all())  # something was removed at the input site
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)


def test_recycled_buffers_are_reused_only_once_free(monkeypatch):
    """A mapping is handed out again only after every tensor and view made from it is
    gone (also one kept alive by a reference cycle until the cycle is collected); free
    ones beyond the idle budget are unmapped."""
    import gc

    from critpath_widgets.engine import memory

    monkeypatch.setattr(memory, "RECYCLE_BYTES", 1024)
    memory.release()
    a = memory.empty((64, 64), torch.float32)
    a.fill_(3)
    ptr = a.data_ptr()
    view = a[1:]  # a view keeps the mapping busy
    del a
    gc.collect()
    b = memory.empty((64, 64), torch.float32)
    assert b.data_ptr() != ptr
    del view
    gc.collect()
    c = memory.empty((64, 64), torch.float32)
    assert c.data_ptr() == ptr  # free again: reused, not mapped afresh
    d = memory.empty((16, 1024), torch.uint8)  # same byte size, other dtype and shape
    assert d.data_ptr() not in (ptr, c.data_ptr()) and d.shape == (16, 1024)
    del b, c, d
    gc.collect()
    assert memory.idle_bytes() == 3 * 64 * 64 * 4

    cycle: list = [memory.empty((64, 64), torch.float32)]
    cycle.append(cycle)  # reachable only through a cycle once the name goes
    held = cycle[0].data_ptr()
    gc.disable()
    try:
        del cycle
        taken = [memory.empty((64, 64), torch.float32) for _ in range(4)]
        assert held not in [t.data_ptr() for t in taken]  # the cycle still holds it
    finally:
        gc.enable()
    del taken
    gc.collect()

    memory.release()
    monkeypatch.setattr(memory, "IDLE_BYTES", 64 * 64 * 4)
    e, f = memory.empty((64, 64), torch.float32), memory.empty((64, 64), torch.float32)
    del e, f
    gc.collect()
    assert memory.idle_bytes() == 2 * 64 * 64 * 4  # kept while nothing new is mapped
    g = memory.empty((10, 1000), torch.float32)  # a new size: idle ones beyond the budget go
    assert memory.idle_bytes() == 64 * 64 * 4
    del g
    gc.collect()
    assert memory.release() > 0 and memory.idle_bytes() == 0


def test_recycled_buffers_in_threads_are_never_shared(monkeypatch):
    import threading

    from critpath_widgets.engine import memory

    monkeypatch.setattr(memory, "RECYCLE_BYTES", 1024)
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(200):
            t = memory.empty((32, 32), torch.float32)
            t.fill_(k)
            if not bool((t == k).all()):
                errors.append(f"thread {k} saw another thread's writes")
            del t

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    memory.release()


# ---------------------------------------------------------------- wrapped models
def test_compiled_and_data_parallel_models_are_explained_through_the_module_they_wrap():
    """torch.compile and DataParallel wrappers are explained through the eager module they
    wrap, with its result; neither the wrapper nor the eager model changes."""
    model = tv("resnet18", num_classes=10)
    x = rand_x(1, 32)
    before = ref.model_state(model)
    want = PathwayExplainer(model).explain(x, sparsity=0.6)
    for wrapper in (torch.compile(model), nn.DataParallel(model)):
        modules = list(wrapper._modules.items())
        ex = PathwayExplainer(wrapper)
        assert ex.model is model
        e = ex.explain(x, sparsity=0.6)
        torch.testing.assert_close(e.saliency, want.saliency, rtol=0, atol=0)
        assert list(wrapper._modules.items()) == modules
        ref.assert_same_state(before, ref.model_state(model))


class _WritesThrough(nn.Module):
    """A wrapper whose attribute writes of the module dicts go to the module it wraps (as
    torch.compile's does): copying it for the folded twin must not write through."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def __setattr__(self, name: str, value) -> None:
        inner = self.__dict__.get("_modules", {}).get("inner")
        if inner is not None and name in ("_modules", "_parameters", "_buffers", "training"):
            setattr(inner, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_folding_never_writes_through_a_wrapper_with_its_own_setattr():
    inner = tv("resnet18", num_classes=10)
    model = _WritesThrough(inner).eval()
    x = rand_x(1, 32)
    before = ref.model_state(model)
    children = list(inner._modules)
    e = PathwayExplainer(model).explain(x, sparsity=0.6)
    e0 = PathwayExplainer(model, fold_batchnorm=False).explain(x, sparsity=0.6)
    torch.testing.assert_close(e.saliency, e0.saliency, rtol=1e-4, atol=1e-6)
    assert list(inner._modules) == children
    ref.assert_same_state(before, ref.model_state(model))


def test_numpy_integer_targets_are_accepted():
    model = small_cnn()
    x = rand_x(3)
    want = PathwayExplainer(model).explain(x, target=[2, 0, 1])
    for target in (
        np.array([2, 0, 1]),
        np.array([2, 0, 1], dtype=np.uint8),
        list(np.array([2, 0, 1])),
    ):
        e = PathwayExplainer(model).explain(x, target=target)
        assert e.target.tolist() == [2, 0, 1]
        torch.testing.assert_close(e.saliency, want.saliency, rtol=0, atol=0)
    e = PathwayExplainer(model).explain(x[:1], target=np.int64(2))
    assert e.target.tolist() == [2]


def test_reprs_are_short_and_say_what_was_explained():
    model = small_cnn()
    e = PathwayExplainer(model).explain(rand_x(6), sparsity=0.6)
    r = repr(e)
    assert len(r) < 600 and "tensor(" not in r
    for part in ("'neuron_mct'", "sparsity=0.6", "(6, 3, 16, 16)", "6 in all", "neurons"):
        assert part in r, part
    assert str(e.target.tolist()[:4])[1:-1] in r
    summary = repr(e.layer_summary())
    assert "tensor(" not in summary and len(summary) < 200 * len(e.site_names)


def test_channel_granularity_reports_the_share_of_neurons_it_removes():
    """With granularity="channel" the sparsity counts channels; the pathway also says
    which share of the neurons that removes (channels of different sizes)."""
    model = tv("resnet18", num_classes=10)
    x = rand_x(2, 32)
    e = PathwayExplainer(model).explain(x, sparsity=0.7, granularity="channel")
    layout = e.pathway.layout
    channels = sum(layout.channels())
    for i in range(2):
        kept_channels = sum(
            int(m[i].reshape(m.shape[1], -1).any(dim=1).sum()) for m in e.pathway.masks
        )
        assert kept_channels == keep_count(channels, 0.7)
        removed = 1 - int(e.pathway.flat[i].sum()) / e.pathway.neurons
        assert float(e.pathway.neuron_sparsity[i]) == pytest.approx(removed)
    assert "neurons removed" in repr(e)
    n = PathwayExplainer(model).explain(x, sparsity=0.7)
    assert torch.allclose(
        n.pathway.neuron_sparsity, torch.full((2,), 0.7, dtype=torch.float64), atol=1e-6
    )


def test_large_smooth_site_output_written_in_place_afterwards():
    """A SiLU site output large enough for the recycled buffers, then ``+=`` in place by
    the model (EfficientNet-V2's FusedMBConv): the masked pass stays exact."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)
            self.act = nn.SiLU(inplace=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            r = self.act(self.conv(x))
            r += x
            return self.fc(r.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Block().double().eval()
    x = torch.randn(1, 16, 96, 96, dtype=torch.float64)
    assert x.numel() * 8 >= masking.memory.RECYCLE_BYTES
    with pytest.warns(SiteWarning):
        e = PathwayExplainer(model).explain(x, sparsity=0.5)
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)
