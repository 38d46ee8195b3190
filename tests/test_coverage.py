"""The coverage matrix: every torchvision classification family explains out of the box.

Per family (a small member, random weights, one image): the explanation runs with the
default sites; the sites found are the activation calls an fx trace of the model lists
(functional calls included); at sparsity 0 the pathway gradient is the plain gradient
of a deep copy; and the model is bitwise as it was (parameters, buffers, modules,
hooks, flags).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from critpath_widgets import PathwayExplainer, SiteWarning

from . import reference as ref
from .coverage_models import FAMILIES, build, fx_site_count


def _plain_gradient(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    m = copy.deepcopy(model)
    xg = x.clone().requires_grad_(True)
    m(xg).gather(1, target[:, None]).sum().backward()
    return xg.grad


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_family_explains_with_all_its_sites(family):
    model, x = build(family)
    count, kinds = fx_site_count(model)
    before = ref.model_state(model)
    ex = PathwayExplainer(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = ex.explain(x, sparsity=0.7)
    assert len(e.site_names) == count, (e.site_names, kinds)
    found: dict[str, int] = {}
    for k in e.site_kinds:
        found[k] = found.get(k, 0) + 1
    assert found == kinds
    smooth = [k for k in kinds if k not in ("ReLU", "ReLU6", "F.relu")]
    assert e.piecewise_linear == (not smooth)
    said = [str(w.message) for w in caught if issubclass(w.category, SiteWarning)]
    assert bool(said) == bool(smooth) and all(k in said[0] for k in smooth)
    assert e.saliency.shape == x.shape and e.saliency.abs().sum() > 0
    assert 0 < int(e.pathway.kept[0]) < e.pathway.neurons

    g0 = ex.explain(x, sparsity=0.0).saliency
    want = _plain_gradient(model, x, e.target)
    err = float((g0 - want).norm() / want.norm())
    assert err < 1e-3, f"sparsity 0 differs from the plain gradient by {err:.2e} (L2)"
    ref.assert_same_state(before, ref.model_state(model))
