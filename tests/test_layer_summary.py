"""Explanation.layer_summary as a table: LayerSummary's DataFrame, HTML and repr."""

from __future__ import annotations

import html
import math

import pytest
import torch
from torch import nn

from critpath_widgets import PathwayExplainer
from critpath_widgets.engine import LayerSummary, SiteSummary

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
    for s in summary:
        assert f"<td>{html.escape(s.name)}</td>" in page
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
