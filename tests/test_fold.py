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
        x = self.act(self.bn(self.conv(x)))
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
    assert ex._folding.pairs == 4  # stem, the two subclasses, the conv with bias
    twin = ex._state.net
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
    assert ex._folding.pairs == 49  # every BatchNorm of EfficientNet-Lite0
    # and the 12 symmetric "same" paddings (stride 1) moved into their convolutions
    assert sum(c.padding != conv.padding for conv, _, c in ex._folding._folded) == 12
    assert bundle.categories[int(e.target)] == "espresso"


def test_weight_standardising_convolution_is_not_folded():
    model = _net(_StdConv)
    ex = PathwayExplainer(model)
    x = rand_x(2)
    _assert_exact(ex, model, x)
    # the stem and the subclasses still fold; the standardising one stays as it is
    assert ex._folding.pairs == 3
    assert ex._state.net.conv is model.conv and ex._state.net.bn is model.bn


def test_twin_follows_changes_to_the_model():
    model = _net()
    ex = PathwayExplainer(model)
    x = rand_x(2)
    _assert_exact(ex, model, x)
    twin = ex._state.net
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
    # in-place edits through .data bump no version: a sample of the values finds them
    for p in model.parameters():  # a manual SGD step the old way
        p.data.add_(
            torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(3)),
            alpha=0.05,
        )
    _assert_exact(ex, model, x)
    model.stem[0].weight.data[2].zero_()  # a pruned filter
    model.bn.running_var.data.mul_(2.0)
    _assert_exact(ex, model, x)
    assert ex._state.net is twin  # all of these refold the same twin
    # a new BatchNorm in place of a folded one, and a changed convolution attribute
    model.bn = nn.BatchNorm2d(8).double().eval()
    _stats(model.bn)
    _assert_exact(ex, model, x)
    assert ex._state.net is not twin and ex._folding.pairs == 4
    model.same.stride = (1, 1)
    _assert_exact(ex, model, rand_x(2, 8))
    assert ex._folding.pairs == 4


def test_user_hooks_turn_folding_off_and_still_fire():
    model = _net()
    ex = PathwayExplainer(model)
    x = rand_x(2)
    ex.explain(x)
    assert ex._state.net is not model
    seen: list[torch.Tensor] = []
    h = model.bn.register_forward_hook(lambda m, a, o: seen.append(o))
    _assert_exact(ex, model, x)
    assert ex._state.net is model and seen  # the hooked BatchNorm really ran
    h.remove()
    _assert_exact(ex, model, x)
    assert ex._state.net is not model and ex._folding.pairs == 4
    g = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        ex.explain(x)
        assert ex._state.net is model  # a global hook sees every module: no twin either
    finally:
        g.remove()


def test_site_that_contains_a_pair_is_not_copied():
    model = _net()
    # a container as a site: its forward hook must fire, so it is never copied
    ex = PathwayExplainer(model, sites=lambda name, m: name in ("stem", "act"))
    x = rand_x(2)
    e = ex.explain(x, sparsity=0.5)
    assert e.site_names[0] == "stem"
    assert ex._state.net.stem is model.stem
    assert ex._folding.pairs == 3  # the subclasses and the conv with bias


def test_fold_batchnorm_false_runs_the_model_itself():
    model = _net()
    ex = PathwayExplainer(model, fold_batchnorm=False)
    _assert_exact(ex, model, rand_x(2))
    assert ex._state.net is model and ex._folding is None


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
    assert ex._folding.pairs == n_bn


def test_intgrad_and_greedy_on_the_twin_match_the_unfolded_model():
    model = _net()
    x = rand_x(1)
    ex = PathwayExplainer(model)
    e = ex.explain(x, method="neuron_intgrad", steps=4, sparsity=0.5)
    assert ex._folding.pairs == 4
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
