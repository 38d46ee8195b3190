"""Token and channels-last site layouts: feature axis, channel granularity, summaries, maps.

References are computed directly from the site tensors (which axis holds the features
is known for each model by construction), not read back from the engine's layout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.maxvit import MaxVit

from critpath_widgets import InputError, PathwayExplainer
from critpath_widgets.engine.axes import feature_axis_last
from critpath_widgets.engine.layout import SiteLayout
from critpath_widgets.engine.pathway.policy import keep_count


def tv(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **kw).eval()


def small_vit() -> nn.Module:
    """ViT on 32 x 32 images, 8 x 8 patches: 16 patch tokens + a class token (the head,
    which torchvision initialises to zeros, gets random weights: gradients flow)."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def small_maxvit() -> nn.Module:
    """One MaxViT stage on 56 x 56: MBConv GELUs (N, C, H, W), MLP GELUs (N, P, 49, C)."""
    torch.manual_seed(0)
    return MaxVit(
        input_size=(56, 56), stem_channels=8, partition_size=7, block_channels=[16],
        block_layers=[1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10,
    ).eval()  # fmt: skip


def rand_x(n: int, size: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, size, size)


def recorded_axes(model: nn.Module, x: torch.Tensor, kind: type) -> list[tuple[str, bool]]:
    """(module name, feature_axis_last of its output) for every call of a ``kind`` module."""
    out: list[tuple[str, bool]] = []
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: out.append((n, feature_axis_last(o))))
        for n, m in model.named_modules()
        if isinstance(m, kind)
    ]
    try:
        model(x.requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.fixture(scope="module")
def vit_e():
    return PathwayExplainer(small_vit(), sites=nn.GELU).explain(
        rand_x(2, 32), sparsity=0.7, granularity="channel"
    )


@pytest.fixture(scope="module")
def convnext_e():
    return PathwayExplainer(tv("convnext_tiny", num_classes=10), sites=nn.GELU).explain(
        rand_x(1, 32), sparsity=0.6, scope="layer", granularity="channel"
    )


@pytest.fixture(scope="module")
def maxvit_e():
    return PathwayExplainer(small_maxvit(), sites=nn.GELU).explain(rand_x(1, 56), sparsity=0.5)


# ---------------------------------------------------------------- feature_axis_last


@pytest.mark.parametrize(
    ("name", "kind", "size", "want"),
    [
        ("resnet18", nn.ReLU, 64, False),
        ("efficientnet_b0", nn.SiLU, 64, False),
        ("convnext_tiny", nn.GELU, 64, True),
        ("swin_t", nn.GELU, 64, True),
    ],
)
def test_feature_axis_on_torchvision_models(name, kind, size, want):
    axes = recorded_axes(tv(name), rand_x(1, size), kind)
    assert axes and all(a is want for _, a in axes), axes


def test_feature_axis_on_vit_and_maxvit():
    axes = recorded_axes(small_vit(), rand_x(1, 32), nn.GELU)
    assert len(axes) == 2 and all(a for _, a in axes)
    # maxvit_t itself: MBConv (and stem) GELUs are conv outputs, attention MLP GELUs not
    axes = recorded_axes(tv("maxvit_t"), rand_x(1, 224), nn.GELU)
    mlp = [a for n, a in axes if "mlp_layer" in n]
    conv = [a for n, a in axes if "mlp_layer" not in n]
    assert len(mlp) > 0 and all(mlp)
    assert len(conv) > len(mlp) / 2 and not any(conv)  # the stem's and MBConvs'


def test_feature_axis_fallback_and_decisive_ops():
    x = torch.randn(2, 5, 6)
    assert feature_axis_last(x) is True  # no history: (N, T, D)
    assert feature_axis_last(torch.randn(2, 3, 4, 4)) is False
    assert feature_axis_last(torch.randn(2, 7)) is False
    # a conv1d output (N, C, L) is 3-D but decided by the convolution
    conv = nn.Conv1d(5, 4, 3)
    assert feature_axis_last(torch.relu(conv(x.requires_grad_(True)))) is False
    # a linear layer on (N, C, H, W)-shaped data acts on the last dim
    lin = nn.Linear(4, 4)
    y = nn.functional.dropout(torch.relu(lin(torch.randn(2, 3, 4, 4)) * 2), 0.0) + 1
    assert feature_axis_last(y) is True
    # a permute moves axes: undecided, so the 4-D fallback
    conv2 = nn.Conv2d(3, 4, 1)
    assert (
        feature_axis_last(torch.relu(conv2(torch.randn(1, 3, 4, 4)).permute(0, 2, 3, 1))) is False
    )


def test_score_pass_records_the_layout(vit_e, convnext_e, maxvit_e):
    assert vit_e.pathway.layout.channel_last == (True, True)
    assert all(convnext_e.pathway.layout.channel_last)
    shapes = maxvit_e.pathway.layout.shapes
    assert maxvit_e.pathway.layout.channel_last == tuple(len(s) == 3 and s[1] == 49 for s in shapes)
    e = PathwayExplainer(tv("resnet18", num_classes=10)).explain(rand_x(1, 32))
    assert not any(e.pathway.layout.channel_last)


# ---------------------------------------------------------------- SiteLayout


def test_site_layout_defaults_channels_and_by_channel():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 7)
    old = SiteLayout.from_tensors([a, b])
    assert old.channel_last == (False, False) and old.channels() == (3, 6)
    assert SiteLayout(old.shapes, old.sizes, old.offsets, old.total).channel_last == (False, False)
    new = SiteLayout.from_tensors([a, b], [True, True])
    assert new.channels() == (5, 7)
    flat = torch.cat([a.flatten(1), b.flatten(1)], dim=1)
    # features first, positions flattened, computed by moving the axis directly
    torch.testing.assert_close(new.by_channel(new.slice(flat, 0), 0), a.movedim(-1, 1).flatten(2))
    torch.testing.assert_close(new.by_channel(new.slice(flat, 1), 1), b.movedim(-1, 1))
    torch.testing.assert_close(old.by_channel(old.slice(flat, 0), 0), a.flatten(2))
    with pytest.raises(ValueError):
        SiteLayout(old.shapes, old.sizes, old.offsets, old.total, (True,))


@pytest.mark.parametrize(
    ("shape", "last", "image", "kind", "hw", "cls", "reason"),
    [
        ((8, 5, 6), False, (20, 24), "image", (5, 6), False, ""),
        ((16, 24, 8), True, (64, 96), "channels_last", (16, 24), False, ""),
        ((17, 8), True, (32, 32), "tokens", (4, 4), True, ""),
        ((16, 8), True, (32, 32), "tokens", (4, 4), False, ""),
        ((4, 49, 8), True, (56, 56), "none", None, False, "partitioned windows"),
        ((10, 8), True, (32, 32), "tokens", (3, 3), True, ""),
        ((11, 8), True, (32, 32), "none", None, False, "no patch grid"),
        ((17, 8), True, (32, 64), "none", None, False, "no patch grid"),  # not the aspect
        ((8, 10), False, (32, 32), "none", None, False, "1-D signal"),
        ((12,), False, (32, 32), "none", None, False, "feature vector"),
        ((12,), True, None, "none", None, False, "feature vector"),
    ],
)
def test_grid(shape, last, image, kind, hw, cls, reason):
    layout = SiteLayout.from_tensors([torch.zeros(1, *shape)], [last])
    g = layout.grid(0, image)
    assert (g.kind, g.hw, g.class_token) == (kind, hw, cls)
    assert reason in g.reason


# ---------------------------------------------------------------- channel granularity


def test_channel_granularity_keeps_whole_hidden_units_of_tokens(vit_e):
    """Global scope: keep_count(all hidden units) units per sample, each kept on every
    token, and they are the units of largest score summed over the tokens."""
    masks, scores = vit_e.pathway.masks, vit_e.scores
    units = sum(m.shape[-1] for m in masks)
    for s in range(2):
        unit_masks = []
        for m in masks:
            m = m[s]  # (T, D)
            assert torch.equal(m.all(dim=0), m.any(dim=0))  # constant over tokens
            unit_masks.append(m[0])
        kept = torch.cat(unit_masks)
        assert int(kept.sum()) == keep_count(units, 0.7)
        unit_scores = torch.cat([sc[s].sum(dim=0) for sc in scores])
        assert int((unit_scores > 0).sum()) > keep_count(units, 0.7)  # a real ranking
        top = torch.zeros(units, dtype=torch.bool)
        top[unit_scores.topk(keep_count(units, 0.7)).indices] = True
        assert torch.equal(kept, top)


def test_channel_granularity_keeps_whole_channels_last_channels(convnext_e):
    """Layer scope on ConvNeXt's (H, W, C) GELUs: keep_count(C) channels per site, each
    kept at every position."""
    for m in convnext_e.pathway.masks:
        m = m[0].flatten(0, 1)  # (H * W, C)
        assert torch.equal(m.all(dim=0), m.any(dim=0))
        assert int(m[0].sum()) == keep_count(m.shape[1], 0.6)


# ---------------------------------------------------------------- layer summary


def test_layer_summary_channel_totals_over_the_feature_axis(vit_e, convnext_e, maxvit_e):
    cases = [(vit_e, 1), (convnext_e, 0)]
    for e, sample in cases:
        for s, c, m in zip(e.layer_summary(sample), e.contributions, e.pathway.masks, strict=True):
            c, m = c[sample].flatten(0, -2), m[sample].flatten(0, -2)  # (positions, C)
            torch.testing.assert_close(s.channel_total, c.sum(dim=0))
            torch.testing.assert_close(s.channel_kept, (c * m).sum(dim=0))
    for s, c in zip(maxvit_e.layer_summary(), maxvit_e.contributions, strict=True):
        c = c[0]
        want = c.flatten(0, -2).sum(dim=0) if s.shape[1] == 49 else c.flatten(1).sum(dim=1)
        torch.testing.assert_close(s.channel_total, want)
        assert math.isclose(float(want.sum()), s.total, rel_tol=1e-4)


def test_kept_channels(vit_e):
    for i, m in enumerate(vit_e.pathway.masks):
        assert torch.equal(vit_e.pathway.kept_channels(i, 1), m[1].any(dim=0))


# ---------------------------------------------------------------- spatial maps


def test_vit_site_map_is_the_patch_grid_without_the_class_token(vit_e):
    summary = vit_e.layer_summary(1)
    for i, c in enumerate(vit_e.contributions):
        t = c[1].sum(dim=-1)  # per token
        torch.testing.assert_close(vit_e.site_map(i, 1), t[1:].reshape(4, 4))
        assert summary[i].grid.kind == "tokens" and summary[i].grid.class_token
        assert math.isclose(summary[i].class_token_total, float(t[0]), rel_tol=1e-5)


def test_channels_last_site_map(convnext_e):
    for i, c in enumerate(convnext_e.contributions):
        torch.testing.assert_close(convnext_e.site_map(i), c[0].sum(dim=-1))
    assert all(s.class_token_total is None for s in convnext_e.layer_summary())


def test_sites_without_a_map_say_why(maxvit_e):
    for i, s in enumerate(maxvit_e.pathway.layout.shapes):
        if s[1] == 49:
            with pytest.raises(InputError, match="partitioned windows"):
                maxvit_e.site_map(i)
        else:
            torch.testing.assert_close(maxvit_e.site_map(i), maxvit_e.contributions[i][0].sum(0))
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.GELU(), nn.Linear(16, 3)).eval()
    e = PathwayExplainer(mlp, sites=nn.GELU).explain(torch.randn(1, 3, 4, 4))
    with pytest.raises(InputError, match="feature vector"):
        e.site_map(0)


# ---------------------------------------------------------------- the layer panel


def test_layer_panel_shows_patch_grid_and_class_token(vit_e):
    from critpath_widgets import LayerContributions

    w = LayerContributions(vit_e, np.zeros((32, 32, 3), np.uint8), sample=1)
    w.selected_site = 1
    assert tuple(w.overlay.shape) == (4, 4) and w.overlay.message == ""
    np.testing.assert_allclose(w.overlay.array, vit_e.site_map(1, 1).numpy(), rtol=1e-6)
    assert "4 x 4 patches" in w.overlay.label
    assert "class token" in w.details.value
    data = w.channel_data()
    assert len(data["values"]) == 64  # the MLP's hidden units
    in_path = vit_e.pathway.masks[1][1].any(dim=0).numpy()
    np.testing.assert_array_equal(data["pathway"], in_path[data["channels"]])
    w.close()


def test_layer_panel_says_why_a_site_has_no_map(maxvit_e):
    from critpath_widgets import LayerContributions

    w = LayerContributions(maxvit_e, np.zeros((56, 56, 3), np.uint8))
    shapes = maxvit_e.pathway.layout.shapes
    window = next(i for i, s in enumerate(shapes) if s[1] == 49)
    w.selected_site = window
    assert w.overlay.values == b""
    assert "no spatial map" in w.overlay.message and "partitioned windows" in w.overlay.message
    assert len(w.channel_data()["values"]) == shapes[window][-1]
    w.selected_site = 0  # a conv site: its map again
    assert tuple(w.overlay.shape) == shapes[0][1:] and w.overlay.message == ""
    w.close()
