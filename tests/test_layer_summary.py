"""Explanation.layer_summary as a table: LayerSummary's DataFrame, HTML and repr."""

from __future__ import annotations

import html
import math
import re

import pytest
import torch
from torch import nn

from critpath_widgets import PathwayExplainer
from critpath_widgets.engine import LayerSummary, SiteSummary
from critpath_widgets.engine.naming import block_of, module_path, site_labels

#: a site name that HTML must escape
ODD = 'relu<b>&"x"'


def odd_named_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(3, 6, 3, padding=1))
    m.add_module(ODD, nn.ReLU())
    m.add_module("conv2", nn.Conv2d(6, 4, 3, padding=1))
    m.add_module("relu2", nn.ReLU())
    m.add_module("flat", nn.Flatten())
    m.add_module("fc", nn.Linear(4 * 8 * 8, 5))
    return m.eval()


@pytest.fixture(scope="module")
def summary() -> LayerSummary:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return PathwayExplainer(odd_named_cnn()).explain(x, sparsity=0.6).layer_summary(1)


def test_layer_summary_is_still_a_list_of_site_summaries(summary):
    assert isinstance(summary, list) and isinstance(summary, LayerSummary)
    assert len(summary) == 2 and all(isinstance(s, SiteSummary) for s in summary)
    assert [s.name for s in summary] == [ODD, "relu2"]
    assert summary.sample == 1


def test_frame_values_equal_the_summaries_fields(summary):
    frame = summary.to_frame()
    assert list(frame.index) == [s.index for s in summary]
    assert list(frame.columns) == [
        "label",
        "name",
        "kind",
        "shape",
        "neurons",
        "kept",
        "kept_pct",
        "total",
        "kept_total",
        "kept_share",
    ]
    for s, (i, row) in zip(summary, frame.iterrows(), strict=True):
        assert i == s.index
        assert row["name"] == s.name and tuple(row["shape"]) == tuple(s.shape)
        assert row["kind"] == s.kind == "ReLU"
        assert row["neurons"] == s.neurons and row["kept"] == s.kept
        assert row["total"] == s.total and row["kept_total"] == s.kept_total
        assert row["kept_pct"] == pytest.approx(100 * s.kept / s.neurons)
        assert row["kept_share"] == pytest.approx(s.kept_total / s.total)


def test_html_table_holds_every_site_name_escaped(summary):
    page = summary._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") == len(summary) + 1
    # one cell per heading in every row
    assert all(row.count("<td>") == page.count("<th>") for row in page.split("<tr>")[2:])
    for s in summary:
        assert f"<td>{html.escape(s.name)}</td>" in page
        assert f"<td>{html.escape(s.label)}</td><td>{html.escape(s.name)}</td>" in page
    assert ODD not in page  # never raw


def test_repr_is_a_few_lines_without_tensors(summary):
    r = repr(summary)
    assert "tensor(" not in r and r.startswith("LayerSummary(sample 1, 2 sites")
    long = LayerSummary([summary[0]] * 40)
    assert len(repr(long).splitlines()) <= 8 and "34 more" in repr(long)


def test_zero_totals_give_no_share():
    s = SiteSummary(0, "a", (1,), 1, 0, 0.0, 0.0, torch.zeros(1), torch.zeros(1))
    assert math.isnan(s.kept_share)
    summary = LayerSummary([s])
    assert "<td>-</td>" in summary._repr_html_()
    assert math.isnan(summary.to_frame().loc[0, "kept_share"])
    assert "(-)" in repr(summary)


# ---- human site names -------------------------------------------------------------


def _check_labels(model: nn.Module, names: list[str], kinds: list[str]) -> list[str]:
    """Labels of a model's sites, checked against its module tree (independently of how
    they are derived): distinct, each starting with its group and ending with its kind
    (and count), the sites of one "block N" inside one common numbered module that no
    site of another block is inside, and stem/head sites outside every block."""
    labels = site_labels(names, kinds)
    assert len(labels) == len(names) and len(set(labels)) == len(labels)
    modules = dict(model.named_modules())
    groups: dict[str, list[str]] = {}
    for name, kind, label in zip(names, kinds, labels, strict=True):
        assert kind in label and label.split(" · ")[-1].split(" #")[0] == kind
        path = module_path(name)
        assert path == "" or path in modules  # a real module of the model
        groups.setdefault(label.split(" · ")[0], []).append(path)
    blocks = {g: paths for g, paths in groups.items() if g.startswith("block ")}
    owners = {}
    for group, paths in blocks.items():
        parts = [p.split(".")[:-1] for p in paths]  # a block holds its sites
        common = []
        for level in zip(*parts, strict=False):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        # the common ancestor holds the sites and is a module of the model, numbered
        while common and not any(c.isdigit() for c in common[-1]):
            common.pop()
        assert common, (group, paths)
        owner = ".".join(common)
        assert owner in modules and all(p.startswith(owner + ".") for p in paths)
        owners[group] = owner
    for group, owner in owners.items():
        for other, paths in groups.items():
            if other != group:
                assert not any(p.startswith(owner + ".") for p in paths), (owner, other)
    # stem before every block site, head after
    kinds_of = [lab.split(" · ")[0] for lab in labels]
    if "stem" in kinds_of:
        assert kinds_of.index("stem") == 0
    if "head" in kinds_of:
        assert kinds_of[-1] == "head"
    return labels


def _sites(model: nn.Module, x: torch.Tensor) -> tuple[list[str], list[str]]:
    e = PathwayExplainer(model).explain(x, sparsity=0.5)
    return e.site_names, e.site_kinds


@pytest.mark.parametrize("family", ["ResNet", "MobileNet v3", "ViT", "Swin", "ConvNeXt"])
def test_site_labels_follow_the_module_tree(family):
    import warnings

    from .coverage_models import FAMILIES, build

    model, x = build(next(f for f in FAMILIES if f.name == family))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GELU and Hardswish sites: not the point here
        names, kinds = _sites(model, x)
    labels = _check_labels(model, names, kinds)
    # where the blocks' own numbers tell them apart, a block is called by its number
    numbered = {"MobileNet v3", "ViT", "Swin", "ConvNeXt"}
    for name, label in zip(names, labels, strict=True):
        block = block_of(name)
        if family in numbered and block is not None:
            number = int(re.search(r"(\d+)$", block).group(1))
            assert label.startswith(f"block {number} · ")
    if family == "ResNet":  # layer1.0 .. layer4.1: numbers repeat, so call order
        assert labels[0] == "stem · ReLU"
        starts = [lab for lab in labels if lab.endswith("#1")]
        assert starts == [f"block {i} · ReLU #1" for i in range(8)]


def test_site_labels_of_the_default_model():
    from critpath_widgets.models import load_model

    model = load_model().model
    names, kinds = _sites(model, torch.randn(1, 3, 224, 224))
    labels = _check_labels(model, names, kinds)
    by_name = dict(zip(names, labels, strict=True))
    assert by_name["_blocks.3._swish#2"] == "block 3 · ReLU6 #2"
    assert by_name["_swish"] == "stem · ReLU6" and by_name["_swish#2"] == "head · ReLU6"


def test_plain_sequential_counts_kinds_over_the_model():
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten()
    ).eval()
    names, kinds = _sites(seq, torch.randn(1, 3, 8, 8))
    assert names == ["1", "3"]
    assert _check_labels(seq, names, kinds) == ["ReLU #1", "ReLU #2"]
    assert site_labels([ODD, "relu2"], ["ReLU", "ReLU"]) == ["ReLU #1", "ReLU #2"]


def test_sites_between_blocks_and_functional_sites():
    names = ["stem.act", "blocks.0.act", "mid:F.relu", "blocks.1.act", "blocks.1.act#2", "F.relu"]
    kinds = ["ReLU", "ReLU", "F.relu", "ReLU", "ReLU", "F.relu"]
    assert site_labels(names, kinds) == [
        "stem · ReLU",
        "block 0 · ReLU",
        "after block 0 · F.relu",
        "block 1 · ReLU #1",
        "block 1 · ReLU #2",
        "head · F.relu",
    ]
    assert module_path("inception3a.branch1:F.relu") == "inception3a.branch1"
    assert block_of("inception3a.branch1:F.relu") == "inception3a"
    assert block_of("encoder.layers.encoder_layer_5.mlp.1") == "encoder.layers.encoder_layer_5"
    assert block_of("conv1:F.relu") is None and block_of("F.relu") is None
