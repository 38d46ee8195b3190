"""DGR (the pruning objective, Wang et al. CVPR 2018): gates trained against an
explicitly gated deep copy, seeded, clamped, the model untouched, and the paper's
argument that its pathways hold dead neurons that contribution-based ones do not."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpath_widgets as cw
from critpath_widgets import Cancelled, InputError, ModelError, OptionError, PathwayExplainer
from critpath_widgets.engine.scorers.dgr import MOMENTUM
from critpath_widgets.methods import LONG_METHODS, METHOD_NAMES

from . import reference as ref


def small_cnn(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 16),
            nn.ReLU(),
            nn.Linear(16, 5),
        )
        .to(dtype)
        .eval()
    )


def rand_x(n: int = 2, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g, dtype=dtype)


def reference_gates(model, x, target, steps, l1, init, lr) -> list[torch.Tensor]:
    """DGR on a deep copy whose site outputs are multiplied by leaf gates: loss.backward
    and torch.optim.SGD, clamped at 0 after each step."""
    m, ctl = ref.instrumented_copy(model)
    with torch.no_grad():
        shapes = []
        ref.run(m, ctl, x, lambda i, a: shapes.append(a.shape) or a)
    gates = [torch.full(s, init, dtype=x.dtype, requires_grad=True) for s in shapes]
    opt = torch.optim.SGD(gates, lr=lr, momentum=MOMENTUM)
    for _ in range(steps):
        opt.zero_grad()
        logits = ref.run(m, ctl, x, lambda i, a: a * gates[i])
        loss = F.cross_entropy(logits, target, reduction="sum")
        loss = loss + l1 * sum(g.sum() for g in gates)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for g in gates:
                g.clamp_(min=0)
    return [g.detach() for g in gates]


@pytest.mark.parametrize("steps", [1, 3])
def test_gates_follow_the_gradient_of_an_explicitly_gated_copy(steps):
    model = small_cnn()
    x = rand_x()
    opts = dict(steps=steps, l1=0.05, init=1.0, lr=3.0)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="dgr", sparsity=0.5, **opts)
    want = reference_gates(model, x, e.target, **opts)
    gates = e._layout.views(ex.scorer("dgr").gates)
    assert len(gates) == len(want) == 3
    for got, w in zip(gates, want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-10, atol=1e-12)
    # the cross-entropy moved the gates apart, and the clamp was reached by the third step
    flat = torch.cat([w.flatten() for w in want])
    assert flat.unique().numel() > flat.numel() // 4 and bool((flat > 1).any())
    assert bool((flat == 0).any()) == (steps == 3)


def test_a_batch_gives_each_sample_its_own_gates():
    ex = PathwayExplainer(small_cnn())
    x = rand_x(3)
    opts = dict(method="dgr", steps=4, l1=0.05, lr=3.0)
    both = ex.explain(x, **opts)
    for i in range(3):
        one = ex.explain(x[i : i + 1], target=int(both.target[i]), **opts)
        for a, b in zip(both.scores, one.scores, strict=True):
            torch.testing.assert_close(a[i : i + 1], b, rtol=1e-10, atol=1e-12)


class _Noisy(nn.Module):
    """Adds noise from the global RNG: the seed is what makes its gates reproducible."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.rand_like(x)


def test_seeded_reproducibility_whatever_the_callers_rng():
    model = nn.Sequential(*small_cnn()[:2], _Noisy(), *small_cnn()[2:]).eval()
    x = rand_x()
    opts = dict(target=[0, 1], method="dgr", sparsity=0.6, steps=3, lr=2.0, l1=0.05)
    runs = []
    for global_seed, seed in [(1, 7), (2, 7), (1, 8)]:
        torch.manual_seed(global_seed)  # the caller's RNG differs; the option decides
        runs.append(PathwayExplainer(model).explain(x, seed=seed, **opts))
    a, b, c = runs
    assert torch.equal(a.pathway.flat, b.pathway.flat)
    for s, t in zip(a.scores, b.scores, strict=True):
        assert torch.equal(s, t)
    assert not all(torch.equal(s, t) for s, t in zip(a.scores, c.scores, strict=True))


def test_gates_stay_non_negative_and_the_loss_decreases():
    ex = PathwayExplainer(small_cnn(torch.float32))
    seen: list[tuple[int, int]] = []
    e = ex.explain(
        rand_x(dtype=torch.float32),
        method="dgr",
        steps=20,
        lr=1.0,
        l1=0.02,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(i, 20) for i in range(1, 21)]
    flat = ex.scorer("dgr").gates
    assert bool((flat >= 0).all()) and bool((flat == 0).any())
    # the scores rank every open gate above every closed one, closed ones by time open
    scores = torch.cat([s.flatten(1) for s in e.scores], dim=1)
    for g, sc in zip(flat, scores, strict=True):
        assert float(sc[g > 0].min()) > float(sc[g == 0].max())
        assert torch.equal(sc[g > 0], g[g > 0])
    losses = ex.scorer("dgr").losses
    assert len(losses) == 20 and losses[-1] < 0.8 * losses[0]


def test_model_untouched_also_when_cancelled():
    model = small_cnn(torch.float32)
    model.train()
    model[2].requires_grad_(False)
    h = model[0].register_forward_hook(lambda *a: None)
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    x = rand_x(dtype=torch.float32)
    ex.explain(x, method="dgr", steps=3)
    ref.assert_same_state(before, ref.model_state(model))

    def cancel(done, total):
        if done == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ex.explain(x, method="dgr", steps=5, progress=cancel)
    ref.assert_same_state(before, ref.model_state(model))
    assert model.training and all(p.grad is None for p in model.parameters())
    h.remove()


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        ({"steps": 0}, InputError, "positive"),
        ({"steps": 2.5}, InputError, "positive"),
        ({"l1": -1e-3}, InputError, "l1"),
        ({"init": 0.0}, InputError, "init"),
        ({"lr": 0}, InputError, "lr"),
        ({"lr": float("nan")}, InputError, "lr"),
        ({"seed": "a"}, InputError, "seed"),
        ({"step_fraction": 0.1}, OptionError, "greedy"),
    ],
)
def test_bad_options_raise_clear_errors(kw, exc, match):
    ex = PathwayExplainer(small_cnn(torch.float32))
    with pytest.raises(exc, match=match):
        ex.explain(rand_x(dtype=torch.float32), method="dgr", **kw)


def test_method_is_listed_as_long_with_a_display_name():
    assert "dgr" in PathwayExplainer.methods and "dgr" in LONG_METHODS
    assert METHOD_NAMES["dgr"] == "DGR (pruning objective)"


# ---------------------------------------------------------------- the paper's argument
def dead_share(pathway_masks: list[torch.Tensor], acts: list[torch.Tensor]) -> float:
    """Share of the kept neurons whose activation on the original input is <= 0."""
    kept = sum(int(m.sum()) for m in pathway_masks)
    dead = sum(int((m & (a <= 0)).sum()) for m, a in zip(pathway_masks, acts, strict=True))
    return dead / kept


def test_dgr_pathway_holds_more_dead_neurons_than_neuron_mct():
    b = cw.load_model()
    x = b.preprocess(cw.sample_image("coffee"))[None]
    m, ctl = ref.instrumented_copy(b.model)
    acts: list[torch.Tensor] = []
    with torch.no_grad():
        ref.run(m, ctl, x, lambda i, a: acts.append(a) or a)
    ex = PathwayExplainer(b.model)
    mct = ex.explain(x, sparsity=0.7)
    dgr = ex.explain(x, method="dgr", sparsity=0.7, steps=DGR_TEST_STEPS, lr=DGR_TEST_LR)
    assert len(acts) == len(dgr.site_names) == 33
    # a ranking, not ties: every kept gate is above 0 (short of the collapse, see below)
    gates = dgr._layout.views(ex.scorer("dgr").gates)
    assert min(float(g[m].min()) for g, m in zip(gates, dgr.pathway.masks, strict=True)) > 0
    shares = {}
    for s, (a, b_) in {0.7: (mct, dgr), 0.9: (mct.at_sparsity(0.9), dgr.at_sparsity(0.9))}.items():
        shares[s] = dead_share(a.pathway.masks, acts), dead_share(b_.pathway.masks, acts)
        print(f"dead share at sparsity {s}: neuron_mct {shares[s][0]:.3f}, dgr {shares[s][1]:.3f}")
    # contributions |a * dy/da| of dead neurons are 0: the NeuronMCT pathway holds none
    # while over half of the neurons contribute; DGR's gates of dead neurons only decay by l1
    assert shares[0.7][0] == shares[0.9][0] == 0
    assert shares[0.7][1] > 0.05 and shares[0.9][1] > 0


#: a short run for the test, before the collapse (most gates at 0, then ranked by ties)
#: that the default steps reach; the default l1, a larger lr
DGR_TEST_STEPS, DGR_TEST_LR = 12, 100.0


def test_a_step_too_large_for_the_model_restarts_smaller():
    """The default lr is tuned on the default model; where it makes the loss explode
    (this small random CNN), the run starts again with a ten times smaller step and
    says which it used, instead of failing on non-finite scores."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).double()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()
    ex = PathwayExplainer(model)
    e = ex.explain(x, 2, method="dgr", sparsity=0.5)  # the defaults: lr 60
    dgr = ex.scorer("dgr")
    assert dgr.lr_used < 60 and all(math.isfinite(v) for v in dgr.losses)
    assert bool(torch.isfinite(dgr.gates).all()) and bool(e.saliency.isfinite().all())
    with pytest.raises(ModelError, match="diverged"):
        ex.explain(x, 2, method="dgr", lr=1e12, l1=0.0)
