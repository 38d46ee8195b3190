"""PathwayExplainer(dtype=torch.float64): the same explanation as a float64 copy of the
model, the model itself never converted or left changed, and edits between calls seen."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from critpath_widgets import Cancelled, ModelError, OptionError, PathwayExplainer

from . import reference as ref


def bn_cnn() -> nn.Module:
    """A small random ReLU CNN with a BatchNorm whose statistics are not the identity."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 1.5)
    return m


def rand_x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def reference(model: nn.Module, x: torch.Tensor, **kw):
    """The explanation of an explicit float64 copy of ``model`` on float64 input."""
    twin = copy.deepcopy(model).double()
    return PathwayExplainer(twin, fold_batchnorm=False).explain(x.double(), **kw)


def assert_same_explanation(e, r) -> None:
    assert e.saliency.dtype == torch.float64 and all(s.dtype == torch.float64 for s in e.scores)
    for a, b in zip(e.pathway.masks, r.pathway.masks, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(e.saliency, r.saliency, rtol=0, atol=1e-12)
    for a, b in zip(e.scores, r.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(e.logits, r.logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "n,kw",
    [
        (2, dict(method="neuron_mct", sparsity=0.7)),
        (2, dict(method="neuron_mct", sparsity=0.5, scope="layer")),
        (1, dict(method="neuron_intgrad", sparsity=0.6, steps=4)),  # broadcast layouts
        (2, dict(method="neuron_intgrad", sparsity=0.6, steps=4, batch_size=3)),
        (2, dict(method="greedy", sparsity=0.6, step_fraction=0.1)),
    ],
)
def test_float64_explanation_equals_a_float64_copy_of_the_model(n, kw):
    model = bn_cnn()
    x = rand_x(n)  # float32: converted
    ex = PathwayExplainer(model, dtype=torch.float64)
    e = ex.explain(x, **kw)
    assert_same_explanation(e, reference(model, x, **kw))
    assert ex.folded_pairs == 0 and ex.network is not model
    moved = e.at_sparsity(0.9)
    assert_same_explanation(moved, reference(model, x, **{**kw, "sparsity": 0.9}))
    twin = PathwayExplainer(copy.deepcopy(model).double(), fold_batchnorm=False)
    torch.testing.assert_close(ex.gradient(x), twin.gradient(x.double()), rtol=0, atol=1e-12)
    torch.testing.assert_close(ex.predict(x), twin.predict(x.double()), rtol=0, atol=1e-12)


def test_tied_weights_and_a_module_called_twice_run_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 256),
        nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 5),
    ).eval()  # fmt: skip
    model[5].weight = model[3].weight  # one parameter under two names
    x = rand_x(2)
    e = PathwayExplainer(model, dtype=torch.float64).explain(x, sparsity=0.6)
    twin = copy.deepcopy(model).double()
    assert twin[5].weight is twin[3].weight
    r = PathwayExplainer(twin, fold_batchnorm=False).explain(x.double(), sparsity=0.6)
    assert_same_explanation(e, r)


class _Failing(nn.Module):
    """A model whose forward raises (after its first layers ran) while ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.body = bn_cnn()
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.fail:
            raise RuntimeError("boom")
        return y


def test_model_left_exactly_as_it_was_also_after_a_raising_call():
    model = _Failing()
    model.train()
    model.body[3].weight.requires_grad_(False)
    seen = []
    h = model.body[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    objects = {n: t for n, t in [*model.named_parameters(), *model.named_buffers()]}
    dtypes = {n: t.dtype for n, t in objects.items()}
    before = ref.model_state(model)

    def check() -> None:
        ref.assert_same_state(before, ref.model_state(model))
        now = dict([*model.named_parameters(), *model.named_buffers()])
        assert now.keys() == objects.keys()
        assert all(now[n] is objects[n] and now[n].dtype == dtypes[n] for n in now)
        assert model.training and all(m.training for m in model.modules())

    ex = PathwayExplainer(model, dtype=torch.float64)
    x = rand_x(2)
    e = ex.explain(x, sparsity=0.7)
    e.at_sparsity(0.8)
    ex.explain(x[:1], method="neuron_intgrad", steps=3)
    ex.explain(x, method="greedy", sparsity=0.3, step_fraction=0.1)
    ex.gradient(x)
    ex.predict(x)
    check()
    assert seen and set(seen) == {torch.float64}  # the user's hook fired, in float64
    model.fail = True
    with pytest.raises(ModelError, match="boom"):
        ex.explain(x)
    check()
    model.fail = False

    def cancel(done: int, total: int) -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ex.explain(x, method="greedy", sparsity=0.5, step_fraction=0.1, progress=cancel)
    check()
    h.remove()


def test_a_weight_edit_between_calls_is_seen():
    model = bn_cnn()
    x = rand_x(2)
    ex = PathwayExplainer(model, dtype=torch.float64)
    first = ex.explain(x, sparsity=0.7)
    with torch.no_grad():
        model[0].weight.data.mul_(-1.5)  # in place, through .data: no version bump
        model[1].running_var.add_(0.5)
    after = ex.explain(x, sparsity=0.7)
    assert not torch.allclose(first.saliency, after.saliency)
    assert_same_explanation(after, reference(model, x, sparsity=0.7))
    model.load_state_dict(bn_cnn().state_dict())
    assert_same_explanation(ex.explain(x, sparsity=0.7), reference(model, x, sparsity=0.7))


def test_float64_input_is_kept_and_other_dtypes_are_refused():
    model = bn_cnn()
    x = rand_x(1).double() + 1e-12  # below float32's resolution: kept in float64
    e = PathwayExplainer(model, dtype=torch.float64).explain(x)
    assert e.inputs.dtype == torch.float64 and torch.equal(e.inputs, x)
    for bad in (torch.float16, torch.float32, "float64"):
        with pytest.raises(OptionError, match="dtype"):
            PathwayExplainer(model, dtype=bad)
