"""Interventions (``Explanation.with_overrides``): units forced out of or into the
pathway, or removed from the full network, against autograd on an explicitly masked
copy of the model (independent of the engine's hooks), exact in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from critpath_widgets import InputError, PathwayExplainer

from . import reference as ref


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
        nn.ReLU(),
        nn.Linear(10, 5),
    ).eval()


class Tokens(nn.Module):
    """Patches as tokens (N, T, D): a site whose channels are on the last axis."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 6, 2, stride=2)
        self.mlp = nn.Linear(6, 7)
        self.act = nn.ReLU()
        self.head = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (N, T, 6)
        return self.head(self.act(self.mlp(t)).mean(dim=1))


def x_of(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)).double()


def reference_masks(e, edits) -> list[torch.Tensor]:
    """The pathway's masks (or all ones) with ``edits(i, mask)`` applied, as float64."""
    return [edits(i, m.clone().double()) for i, m in enumerate(e.pathway.masks)]


def check_against_masked_copy(model, x, target, e, masks) -> None:
    f = ref.masked_model(model, masks)
    with torch.no_grad():
        torch.testing.assert_close(e.pathway_logits, f(x), rtol=0, atol=1e-12)
    g = ref.masked_gradient(model, x, target, masks)
    torch.testing.assert_close(e.saliency, g, rtol=0, atol=1e-12)


def test_drop_and_keep_channels_in_the_pathway_equal_the_masked_copy():
    model = cnn().double()
    x = x_of()
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.6)
    names = e.site_names
    o = e.with_overrides(drop={names[1]: [0, 5]}, keep={0: [2], names[2]: "all"})

    def edit(i, m):
        if i == 1:
            m[:, [0, 5]] = 0
        if i == 0:
            m[:, 2] = 1
        if i == 2:
            m[:] = 1
        return m

    check_against_masked_copy(model, x, e.target, o, reference_masks(e, edit))
    assert o.interventions.network == "pathway" and len(o.interventions.items) == 3
    assert o.sparsity == e.sparsity and o.scoring is e.scoring
    # the original explanation is untouched
    assert e.interventions is None and not torch.equal(o.saliency, e.saliency)


def test_ablation_of_the_full_network_equals_the_masked_copy():
    model = cnn().double()
    x = x_of()
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.9)
    o = e.with_overrides(drop={-1: [3, 4], 0: [(1, 0, 0), (1, 7, 7)]}, network="full")

    def edit(i, m):
        m[:] = 1
        if i == 2:
            m[:, [3, 4]] = 0
        if i == 0:
            m[:, 1, 0, 0] = 0
            m[:, 1, 7, 7] = 0
        return m

    check_against_masked_copy(model, x, e.target, o, reference_masks(e, edit))
    assert o.sparsity == 0.0 and "full network" in repr(o)
    # nothing dropped: the full network's own logits
    same = e.with_overrides(network="full")
    torch.testing.assert_close(same.pathway_logits, e.logits, rtol=0, atol=1e-12)


def test_channels_of_a_token_site_are_its_last_axis():
    model = Tokens().double()
    x = x_of()
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.5)
    o = e.with_overrides(drop={"act": [1, 6]}, keep={"act": [0]})

    def edit(i, m):
        m[..., [1, 6]] = 0
        m[..., 0] = 1
        return m

    check_against_masked_copy(model, x, e.target, o, reference_masks(e, edit))


def test_at_sparsity_keeps_the_interventions_and_new_overrides_replace_them():
    model = cnn().double()
    x = x_of()
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.5)
    o = e.with_overrides(drop={1: [0]})
    moved = o.at_sparsity(0.8)
    assert moved.interventions == o.interventions
    direct = e.at_sparsity(0.8).with_overrides(drop={1: [0]})
    torch.testing.assert_close(moved.saliency, direct.saliency, rtol=0, atol=0)
    again = o.with_overrides(keep={1: [0]})
    assert [it.action for it in again.interventions.items] == ["keep"]
    with pytest.raises(InputError, match="no sparsity"):
        e.with_overrides(drop={0: [0]}, network="full").at_sparsity(0.3)


def test_probabilities_and_top_classes():
    model = cnn().double()
    x = x_of()
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.5)
    top = e.top_classes(3, sample=1, network="full")
    p = torch.softmax(model(x)[1], 0)
    want = p.topk(3)
    assert [i for i, _ in top] == want.indices.tolist()
    assert [v for _, v in top] == pytest.approx(want.values.tolist())
    assert e.top_classes(2)[0][0] == int(e.pathway_logits[0].argmax())


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"drop": {"nope.relu": [0]}}, "no site named"),
        ({"drop": {"4": [0]}}, "no site named '4'"),
        ({"drop": {9: [0]}}, "out of range"),
        ({"drop": {0: [6]}}, r"channel.*out of range.*6 channels"),
        ({"drop": {0: [(0, 0)]}}, "not an index into"),
        ({"drop": {0: "everything"}}, "'all'"),
        ({"drop": {0: []}}, "empty"),
        ({"drop": {0: [1, (0, 0, 0)]}}, "not a mix"),
        ({"drop": [0]}, "must be a dict"),
        ({"drop": {0: [1]}, "keep": {0: [1]}}, "both dropped and kept"),
        ({"keep": {0: [1]}, "network": "full"}, "keeps every unit"),
        ({"network": "restricted"}, "network must be one of"),
    ],
)
def test_bad_overrides_are_named(kw, match):
    model = cnn()
    x = x_of().float()
    e = PathwayExplainer(model).explain(x)
    with pytest.raises(InputError, match=match):
        e.with_overrides(**kw)


def test_the_model_is_left_exactly_as_it_was():
    model = cnn()
    before = ref.model_state(model)
    e = PathwayExplainer(model).explain(x_of().float(), sparsity=0.5)
    e.with_overrides(drop={0: [1]}, keep={1: "all"})
    e.with_overrides(drop={0: [1]}, network="full")
    with pytest.raises(InputError):
        e.with_overrides(drop={0: [99]})
    ref.assert_same_state(before, ref.model_state(model))


def test_knocking_out_the_top_channels_of_the_last_site_on_the_default_model():
    """The classroom demonstration: the three channels of the last site with the largest
    contribution, removed from the pathway and from the full network, lower the target's
    probability; equal to a float32 masked copy of the real model within rounding."""
    from critpath_widgets.models import load_model, sample_image

    bundle = load_model()
    x = bundle.preprocess(sample_image("coffee"))[None]
    e = PathwayExplainer(bundle.model).explain(x, sparsity=0.7)
    last = len(e.site_names) - 1
    top3 = e.layer_summary()[last].channel_total.topk(3).indices.tolist()
    t = int(e.target[0])
    for network in ("pathway", "full"):
        o = e.with_overrides(drop={last: top3}, network=network)
        before = float(e.probabilities(network)[0, t])
        after = float(o.probabilities()[0, t])
        assert after < before, (network, before, after)
        base = (
            e.pathway.masks
            if network == "pathway"
            else [torch.ones_like(m) for m in e.pathway.masks]
        )
        masks = [m.clone().float() for m in base]
        masks[last][:, top3] = 0
        with torch.no_grad():
            y = ref.masked_model(bundle.model, masks)(x)
        torch.testing.assert_close(o.pathway_logits, y, rtol=1e-4, atol=1e-3)
