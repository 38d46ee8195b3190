"""BatchNorm folding (engine/fold.py): the folded twin must explain exactly what the
user's own model computes, follow every change of the model, and step aside whenever
folding would be visible (hooks) or wrong (a convolution that is not a plain one)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpath_widgets as cw
from critpath_widgets import PathwayExplainer

from . import reference as ref


def rand_x(n: int, size: int = 16, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype)


def _stats(bn: nn.BatchNorm2d) -> None:
    """Statistics far from a fresh BatchNorm's (which is nearly the identity)."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)


class _SamePad(nn.Conv2d):
    """A convolution subclass with its own forward, like EfficientNet's
    Conv2dStaticSamePadding: its weight and bias are used as they are, so it folds; a
    symmetric zero padding child moves into the copy's ``padding``."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kw):
        super().__init__(*args, **kw)
        self.static_padding = nn.ZeroPad2d(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _StdConv(nn.Conv2d):
    """Weight standardisation: a scaled weight is standardised back, so folding a
    BatchNorm into it would be wrong (the twin's check must refuse it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class _FoldNet(nn.Module):
    """Foldable pairs (a plain conv, a conv subclass, a conv with bias), and pairs that
    must stay: a conv whose output is also read by a skip connection, a BatchNorm after
    a ReLU, and a BatchNorm1d after a Linear."""

    def __init__(self, conv: type[nn.Conv2d] = nn.Conv2d):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.act = nn.ReLU6()
        self.same = _SamePad(8, 8, 2, stride=2, bias=False, pad=(0, 1, 0, 1))
        self.bn_same = nn.BatchNorm2d(8)
        self.same3 = _SamePad(8, 8, 3, bias=False, pad=(1, 1, 1, 1))
        self.bn_same3 = nn.BatchNorm2d(8)
        self.conv = conv(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.skip_conv = nn.Conv2d(8, 8, 1)  # its output also goes round the BatchNorm
        self.skip_bn = nn.BatchNorm2d(8)
        self.post_relu = nn.ReLU()
        self.bn_after_relu = nn.BatchNorm2d(8)
        # a plain tensor attribute (not a buffer) of a container the twin copies
        self.gain = torch.tensor(1.0, dtype=torch.float64)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.bn1d = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 5)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                _stats(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.bn_same(self.same(x)))
        x = self.act(self.bn_same3(self.same3(x)))
        x = self.act(self.bn(self.conv(x))) * self.gain
        s = self.skip_conv(x)
        x = self.post_relu(self.skip_bn(s) + s)
        x = self.bn_after_relu(x)
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.head(self.act(self.bn1d(self.fc(x))))


def _net(conv: type[nn.Conv2d] = nn.Conv2d) -> nn.Module:
    torch.manual_seed(0)
    return _FoldNet(conv).double().eval()


def _assert_exact(ex: PathwayExplainer, model: nn.Module, x: torch.Tensor, sparsity=0.6):
    """Scores, pathway gradient, pathway logits and plain gradient equal autograd's on
    the user's own (unfolded) model."""
    e = ex.explain(x, sparsity=sparsity)
    want = ref.mct_scores(model, x, e.target)
    for i, (a, b) in enumerate(zip(e.scores, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"site {i}")
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)
    want_logits = ref.masked_model(model, e.pathway.masks)(x)
    torch.testing.assert_close(e.pathway_logits, want_logits, rtol=1e-10, atol=1e-12)
    g0 = ref.plain_gradient(model, x, e.target)
    torch.testing.assert_close(ex.gradient(x, e.target), g0, rtol=1e-10, atol=1e-12)
    return e


def test_folds_exactly_the_pairs_that_may_fold_and_stays_exact():
    model = _net()
    x = rand_x(2)
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    _assert_exact(ex, model, x)
    assert ex.folded_pairs == 4  # stem, the two subclasses, the conv with bias
    twin = ex.network
    assert twin is not model
    assert isinstance(twin.stem[1], nn.Identity) and isinstance(twin.bn, nn.Identity)
    assert isinstance(twin.bn_same, nn.Identity) and isinstance(twin.bn_same3, nn.Identity)
    # the symmetric padding moved into the convolution; the asymmetric one stays
    assert isinstance(twin.same3.static_padding, nn.Identity) and twin.same3.padding == (1, 1)
    assert twin.same.static_padding is model.same.static_padding and twin.same.padding == (0, 0)
    assert model.same3.padding == (0, 0)
    for name in ("skip_bn", "bn_after_relu", "bn1d", "act", "post_relu", "skip_conv", "fc"):
        assert getattr(twin, name) is getattr(model, name), name  # shared, not copied
    ref.assert_same_state(before, ref.model_state(model))
    # the same answers without folding
    e0 = PathwayExplainer(model, fold_batchnorm=False).explain(x, sparsity=0.6)
    e1 = ex.explain(x, sparsity=0.6)
    torch.testing.assert_close(e1.saliency, e0.saliency, rtol=1e-10, atol=1e-12)


def test_default_model_folds_and_matches_autograd_in_float64():
    bundle = cw.load_model()
    model = bundle.model.double()
    x = bundle.preprocess(cw.sample_image("coffee"))[None].double()
    ex = PathwayExplainer(model)
    e = _assert_exact(ex, model, x, sparsity=0.7)
    assert ex.folded_pairs == 49  # every BatchNorm of EfficientNet-Lite0
    # and the 12 symmetric "same" paddings (stride 1) moved into their convolutions
    orig = dict(model.named_modules())
    convs = [(n, m) for n, m in ex.network.named_modules() if isinstance(m, nn.Conv2d)]
    moved = [n for n, m in convs if m.padding != orig[n].padding]
    assert len(moved) == 12
    assert bundle.categories[int(e.target)] == "espresso"


def test_weight_standardising_convolution_is_not_folded():
    model = _net(_StdConv)
    ex = PathwayExplainer(model)
    x = rand_x(2)
    _assert_exact(ex, model, x)
    # the stem and the subclasses still fold; the standardising one stays as it is
    assert ex.folded_pairs == 3
    assert ex.network.conv is model.conv and ex.network.bn is model.bn


def test_twin_follows_changes_to_the_model():
    model = _net()
    ex = PathwayExplainer(model)
    x = rand_x(2)
    _assert_exact(ex, model, x)
    twin = ex.network
    # an optimizer step (in-place, bumps versions)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(x).sum().backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    _assert_exact(ex, model, x)
    # a train-mode forward moves the running statistics without bumping their versions
    model.train()
    with torch.no_grad():
        model(rand_x(4, seed=5) * 3 + 1)
    model.eval()
    _assert_exact(ex, model, x)
    # load_state_dict, and a weight replaced through .data
    state = {k: v.clone() for k, v in _net().state_dict().items()}
    model.load_state_dict(state)
    _assert_exact(ex, model, x)
    model.conv.weight.data = model.conv.weight.data * 1.5
    _assert_exact(ex, model, x)
    # in-place edits through .data bump no version: the fold reads every value each call
    for p in model.parameters():  # a manual SGD step the old way
        p.data.add_(
            torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(3)),
            alpha=0.05,
        )
    _assert_exact(ex, model, x)
    model.stem[0].weight.data[2].zero_()  # a pruned filter
    model.bn.running_var.data.mul_(2.0)
    _assert_exact(ex, model, x)
    assert ex.network is twin  # all of these refold the same twin
    # a new BatchNorm in place of a folded one, and a changed convolution attribute
    model.bn = nn.BatchNorm2d(8).double().eval()
    _stats(model.bn)
    _assert_exact(ex, model, x)
    assert ex.network is not twin and ex.folded_pairs == 4
    model.same.stride = (1, 1)
    _assert_exact(ex, model, rand_x(2, 8))
    assert ex.folded_pairs == 4


def test_user_hooks_turn_folding_off_and_still_fire():
    model = _net()
    ex = PathwayExplainer(model)
    x = rand_x(2)
    ex.explain(x)
    assert ex.network is not model
    seen: list[torch.Tensor] = []
    h = model.bn.register_forward_hook(lambda m, a, o: seen.append(o))
    _assert_exact(ex, model, x)
    assert ex.network is model and seen  # the hooked BatchNorm really ran
    h.remove()
    _assert_exact(ex, model, x)
    assert ex.network is not model and ex.folded_pairs == 4
    g = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        ex.explain(x)
        assert ex.network is model  # a global hook sees every module: no twin either
    finally:
        g.remove()


def test_site_that_contains_a_pair_is_not_copied():
    model = _net()
    # a container as a site: its forward hook must fire, so it is never copied
    ex = PathwayExplainer(model, sites=lambda name, m: name in ("stem", "act"))
    x = rand_x(2)
    e = ex.explain(x, sparsity=0.5)
    assert e.site_names[0] == "stem"
    assert ex.network.stem is model.stem
    assert ex.folded_pairs == 3  # the subclasses and the conv with bias


def test_fold_batchnorm_false_runs_the_model_itself():
    model = _net()
    ex = PathwayExplainer(model, fold_batchnorm=False)
    _assert_exact(ex, model, rand_x(2))
    assert ex.network is model and ex.folded_pairs == 0 and ex.folding_off_reason is None


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_fold_and_stay_exact(name):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _stats(m)
    ex = PathwayExplainer(model)
    _assert_exact(ex, model, rand_x(1, 32), sparsity=0.5)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert ex.folded_pairs == n_bn


def test_intgrad_and_greedy_on_the_twin_match_the_unfolded_model():
    model = _net()
    x = rand_x(1)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="neuron_intgrad", steps=4, sparsity=0.5)
    assert ex.folded_pairs == 4
    want = ref.intgrad_scores_loop(model, x, e.target, steps=4)
    for i, (a, b) in enumerate(zip(e.scores, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"site {i}")
    g = ref.masked_gradient(model, x, e.target, e.pathway.masks)
    torch.testing.assert_close(e.saliency, g, rtol=1e-10, atol=1e-12)
    e0 = PathwayExplainer(model, fold_batchnorm=False).explain(
        x, method="greedy", step_fraction=0.1, sparsity=0.5
    )
    e1 = ex.explain(x, method="greedy", step_fraction=0.1, sparsity=0.5)
    assert torch.equal(e1.pathway.flat, e0.pathway.flat)
    torch.testing.assert_close(e1.saliency, e0.saliency, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- never stale
def _assert_fresh(
    ex: PathwayExplainer, model: nn.Module, x: torch.Tensor, pairs: int | None
) -> None:
    """The explanation equals the tests' reference and a fresh unfolded explainer on the
    model as it is now, and the twin (or the model) that ran is the one expected."""
    e = _assert_exact(ex, model, x)
    e0 = PathwayExplainer(model, fold_batchnorm=False).explain(x, sparsity=0.6)
    torch.testing.assert_close(e.saliency, e0.saliency, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e.logits, e0.logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e.pathway_logits, e0.pathway_logits, rtol=1e-10, atol=1e-12)
    if pairs is not None:
        assert ex.folded_pairs == pairs


def _sgd_step(m: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    m(x).sum().backward()
    opt.step()
    m.zero_grad(set_to_none=True)


def _fresh_bn(m: nn.Module) -> nn.Module:
    bn = nn.BatchNorm2d(8).double().eval()
    _stats(bn)
    return bn


def _no_grad(f):
    def g(m: nn.Module) -> None:
        with torch.no_grad():
            f(m)

    return g


_EDITS = {
    "data_filter": lambda m: m.conv.weight.data[3].zero_(),
    "data_single_value": lambda m: m.stem[0].weight.data.view(-1)[37].mul_(-4.0),
    "no_grad_inplace": _no_grad(lambda m: m.same3.weight[1].mul_(-2.0)),
    "optimizer_step": lambda m: _sgd_step(m, rand_x(2, seed=9)),
    "load_state_dict": lambda m: m.load_state_dict(_net().state_dict() | {"bn.bias": -m.bn.bias}),
    "replace_module": lambda m: setattr(m, "bn", _fresh_bn(m)),
    "sequential_setitem": lambda m: m.stem.__setitem__(1, _fresh_bn(m)),
    "register_module": lambda m: m.register_module("bn_same", _fresh_bn(m)),
    "rebind_parameter": lambda m: setattr(m.conv, "weight", nn.Parameter(m.conv.weight * 0.5)),
    "rebind_buffer": lambda m: setattr(m.bn, "running_mean", m.bn.running_mean + 1.0),
    "rebind_attribute": lambda m: setattr(m, "gain", torch.tensor(3.0, dtype=torch.float64)),
    "rebind_conv_attribute": lambda m: setattr(m.conv, "dilation", (2, 2)),
    "bn_eps": lambda m: setattr(m.bn, "eps", 0.5),
    "bn_running_stats": lambda m: m.bn.running_var.data.mul_(2.0),
    "bn_momentum_train_forward": lambda m: (
        setattr(m.bn, "momentum", 0.9),
        m.train(),
        _no_grad(lambda n: n(rand_x(4, seed=5) * 3 + 1))(m),
        m.eval(),
    ),
    "train_switch": lambda m: m.train(),
    "bn_train_switch": lambda m: m.bn.train(),
}


@pytest.mark.parametrize("edit", list(_EDITS))
def test_next_explanation_follows_any_edit_of_the_model(edit):
    """Whatever the user does to the model between two calls, the next explanation is
    that of a fresh explainer on the edited model (and the reference's)."""
    model = _net()
    x = rand_x(2)
    ex = PathwayExplainer(model)
    _assert_fresh(ex, model, x, pairs=4)
    _EDITS[edit](model)
    _assert_fresh(ex, model, x, pairs=4)
    assert ex.folding_off_reason is None


def test_data_edit_of_any_filter_of_a_wide_convolution_is_seen():
    """The reproduction from the issue: a filter that no value sample would hold."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 1024, 3), nn.BatchNorm2d(1024), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)
    ).double()
    model(rand_x(1, 6))
    model.eval()
    _stats(model[1])
    x = rand_x(2, 6)
    ex = PathwayExplainer(model)
    _assert_fresh(ex, model, x, pairs=1)
    for f in (1, 600, 1023):
        model[0].weight.data[f].zero_()
        _assert_fresh(ex, model, x, pairs=1)


def test_pruning_a_folded_convolution_unfolds_that_pair_only():
    """torch.nn.utils.prune makes the weight a plain attribute set by a forward pre-hook:
    the pruned convolution then runs as the user's own module (its hook fires), its
    BatchNorm with it, and the other pairs stay folded."""
    from torch.nn.utils import prune

    model = _net()
    x = rand_x(2)
    ex = PathwayExplainer(model)
    _assert_fresh(ex, model, x, pairs=4)
    prune.l1_unstructured(model.conv, "weight", amount=0.5)
    # the reference: an unpruned copy holding the pruned weight as a plain parameter
    state = model.state_dict()
    orig, mask = state.pop("conv.weight_orig"), state.pop("conv.weight_mask")
    plain = _net()
    plain.load_state_dict(state | {"conv.weight": orig * mask})
    e = _assert_exact(ex, plain, x)
    e0 = PathwayExplainer(model, fold_batchnorm=False).explain(x, sparsity=0.6)
    torch.testing.assert_close(e.saliency, e0.saliency, rtol=1e-10, atol=1e-12)
    assert ex.folded_pairs == 3 and ex.folding_off_reason is None
    assert ex.network.conv is model.conv and ex.network.bn is model.bn
    prune.remove(model.conv, "weight")  # a plain parameter again
    with torch.no_grad():
        model.conv.weight.mul_(-1.0)
    _assert_fresh(ex, model, x, pairs=None)  # exact, however many pairs fold now


def test_fallback_warns_once_per_reason_and_the_flag_says_why():
    model = _net()
    x = rand_x(2)
    ex = PathwayExplainer(model)
    ex.explain(x)
    h = model.bn.register_forward_hook(lambda m, a, o: None)
    with pytest.warns(cw.FoldingWarning) as record:
        for _ in range(3):
            ex.explain(x)
    assert len(record) == 1 and "'bn'" in str(record[0].message)
    assert record[0].filename == __file__  # it names the user's call
    assert ex.folded_pairs == 0 and "'bn'" in ex.folding_off_reason
    h.remove()
    ex.explain(x)
    assert ex.folded_pairs == 4 and ex.folding_off_reason is None


def test_a_model_that_keeps_changing_ends_unfolded_with_a_warning():
    model = _net()
    x = rand_x(2)
    ex = PathwayExplainer(model)
    with pytest.warns(cw.FoldingWarning, match="changed 8 times"):
        for k in range(10):
            model.gain = torch.tensor(1.0 + k, dtype=torch.float64)
            ex.explain(x)
    assert ex.folded_pairs == 0 and "changed 8 times" in ex.folding_off_reason
    _assert_fresh(ex, model, x, pairs=0)
