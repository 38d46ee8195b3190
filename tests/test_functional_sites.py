"""Activations called as functions inside ``forward`` are sites, and modern activations
are sites by default, flagged where they are not piecewise linear.

The reference is independent of the engine's function mode: the test models call
``self.ctl(a)`` on every activation's output themselves, and :mod:`tests.reference`
masks or scales through that call on a deep copy, with plain autograd.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from critpath_widgets import ModelError, PathwayExplainer, SiteWarning
from critpath_widgets.engine import functional

from . import reference as ref


class _Block(nn.Module):
    """A submodule whose own forward calls an activation function."""

    def __init__(self, ctl: ref._Control):
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.ctl = ctl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ctl(F.leaky_relu(self.conv(x), 0.1))


class FunctionalNet(nn.Module):
    """Every form of call the engine records: F.relu, torch.relu, in place with the
    result used and with it discarded, a Tensor method, calls inside a submodule (twice),
    and a module site in between."""

    def __init__(self) -> None:
        super().__init__()
        self.ctl = ref._Control()
        self.c = nn.ModuleList(
            [nn.Conv2d(3, 6, 3, padding=1)] + [nn.Conv2d(6, 6, 3, padding=1) for _ in range(4)]
        )
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.block = _Block(self.ctl)
        self.fc = nn.Linear(6 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctl = self.ctl
        x = ctl(F.relu(self.bn(self.c[0](x))))
        x = ctl(torch.relu(self.c[1](x)))
        x = ctl(self.act(self.c[2](x)))
        x = ctl(F.relu(self.c[3](x), inplace=True))
        y = self.c[4](x)
        y.relu_()  # result discarded: y itself must carry the site's output
        x = ctl(y)
        x = self.block(self.block(x))
        x = ctl(F.relu6(x * 3))
        x = ctl(F.hardtanh(x, 0.0, 2.0))
        return self.fc(x.flatten(1))


NAMES = [
    "F.relu",
    "F.relu#2",
    "act",
    "F.relu#3",
    "F.relu#4",
    "block:F.leaky_relu",
    "block:F.leaky_relu#2",
    "F.relu6",
    "F.hardtanh",
]


def _net(seed: int = 0) -> FunctionalNet:
    torch.manual_seed(seed)
    m = FunctionalNet().double().eval()
    with torch.no_grad():  # a BatchNorm with statistics of its own, for the folded twin
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def _x(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("fold", [True, False])
def test_functional_sites_are_named_by_caller_and_exact(fold):
    model = _net()
    x = _x()
    before = ref.model_state(model)
    ex = PathwayExplainer(model, fold_batchnorm=fold)
    e = ex.explain(x, sparsity=0.6)
    assert e.site_names == NAMES
    assert e.site_kinds[:3] == ["F.relu", "F.relu", "ReLU"]
    assert e.piecewise_linear
    for got, want in zip(e.contributions, ref.mct_scores(model, x, e.target), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for f in (e, e.at_sparsity(0.2), e.at_sparsity(0.9)):
        g = ref.masked_gradient(model, x, f.target, f.pathway.masks)
        torch.testing.assert_close(f.saliency, g, rtol=1e-10, atol=1e-12)
        want = ref.masked_model(model, f.pathway.masks)(x)
        torch.testing.assert_close(f.pathway_logits, want, rtol=1e-10, atol=1e-12)
    g0 = ex.explain(x, sparsity=0.0).saliency
    torch.testing.assert_close(g0, ref.plain_gradient(model, x, e.target), rtol=1e-10, atol=1e-12)
    ref.assert_same_state(before, ref.model_state(model))
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("n", [1, 2])
def test_intgrad_on_functional_sites_matches_the_loop(n):
    model = _net()
    x = _x(n)
    e = PathwayExplainer(model).explain(x, method="neuron_intgrad", steps=4)
    want = ref.intgrad_scores_loop(model, x, e.target, steps=4)
    for got, w in zip(e.scores, want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-8, atol=1e-10)


def test_sites_can_name_functions():
    model, x = _net(), _x()
    relu_only = PathwayExplainer(model, sites=F.relu).explain(x)
    assert relu_only.site_names == ["F.relu", "F.relu#2", "F.relu#3", "F.relu#4"]
    mixed = PathwayExplainer(model, sites=[nn.ReLU, F.leaky_relu]).explain(x)
    assert mixed.site_names == ["act", "block:F.leaky_relu", "block:F.leaky_relu#2"]
    assert PathwayExplainer(model, sites=[nn.ReLU]).explain(x).site_names == ["act"]
    assert PathwayExplainer(model, sites=torch.relu).explain(x).site_names == relu_only.site_names


def test_activation_modules_count_once_and_smooth_ones_are_flagged():
    """nn.GELU's forward calls F.gelu: one site, the module's. GELU, SiLU and Hardswish
    are sites by default, exact against a masked copy, and flagged (once) as not
    piecewise linear."""
    torch.manual_seed(0)
    acts = (nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Hardswish(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    ).double()
    x = _x()
    ex = PathwayExplainer(model)
    with pytest.warns(SiteWarning, match="GELU x1, Hardswish x1, SiLU x1"):
        e = ex.explain(x, sparsity=0.5)
    assert e.site_names == ["1", "3", "5", "7"]
    assert e.site_kinds == ["ReLU", "GELU", "SiLU", "Hardswish"]
    assert not e.piecewise_linear
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks, types=acts)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per explainer
        ex.explain(x, sparsity=0.5)


def test_models_without_functional_calls_stop_looking_for_them(monkeypatch):
    """The function mode runs in the first pass only when the model calls none of the
    functions: later passes cost what they did without it."""
    seen = []
    orig = functional.FunctionalSites.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        seen.append(func)
        return orig(self, func, types, args, kwargs)

    monkeypatch.setattr(functional.FunctionalSites, "__torch_function__", counting)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    ex = PathwayExplainer(model)
    ex.explain(torch.randn(1, 3, 8, 8))
    assert seen  # the first pass looked
    assert ex._state.functional_seen is False
    seen.clear()
    ex.explain(torch.randn(1, 3, 8, 8), method="neuron_intgrad", steps=2)
    assert seen == []
    # and a model that calls them keeps the mode on
    ex2 = PathwayExplainer(_net())
    ex2.explain(_x())
    assert ex2._state.functional_seen is True


def test_a_raising_forward_leaves_model_and_mode_stack_clean():
    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            h = F.relu(self.conv(x))
            if x.shape[0] == 3:
                raise RuntimeError("boom")
            return self.fc(h.flatten(1))

    model = Raises()
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    with pytest.raises(ModelError, match="boom"):
        ex.explain(torch.randn(3, 3, 8, 8))
    assert torch._C._len_torch_function_stack() == 0
    ref.assert_same_state(before, ref.model_state(model))
    e = ex.explain(torch.randn(2, 3, 8, 8))
    assert e.site_names == ["F.relu"]
    ref.assert_same_state(before, ref.model_state(model))


def test_sites_that_are_not_activations_come_with_a_notice():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.warns(SiteWarning, match="not activations"):
        PathwayExplainer(model, sites=nn.Conv2d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PathwayExplainer(model, sites=nn.ReLU)


def test_a_zero_head_gives_a_blank_map_with_a_notice():
    """torchvision's ViT initialises its head to zero: the logits do not depend on the
    input, so the map is blank, and the explanation says why."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    nn.init.zeros_(model[3].weight)
    nn.init.zeros_(model[3].bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SiteWarning)
        e = PathwayExplainer(model).explain(torch.randn(2, 3, 8, 8))
    assert not e.saliency.any()
    assert len(e.notices) == 2 and all("does not depend" in n for n in e.notices)
    ok = PathwayExplainer(nn.Sequential(*list(model)[:3], nn.Linear(4 * 6 * 6, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SiteWarning)
        assert ok.explain(torch.randn(2, 3, 8, 8)).notices == ()
