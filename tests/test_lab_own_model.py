"""Lab 04 (your own model): every exercise right and wrong, and the notebook run through."""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch

import critpath_widgets as cw
from critpath_widgets import errors
from critpath_widgets.errors import SiteWarning
from critpath_widgets.labs import notebook_dir, open_lab
from critpath_widgets.labs import own_model as om
from tests.lab_notebooks import run_notebook

NOTEBOOK = "04_your_own_model.ipynb"


@pytest.fixture(scope="module")
def lab():
    """One lab for the module: its context is built once."""
    return open_lab("own_model")


@pytest.fixture(scope="module")
def ctx(lab):
    """The lab's models and inputs."""
    return lab.context


@pytest.fixture(scope="module")
def e_net(ctx):
    """TinyNet explained as the notebook does (the student's route)."""
    return cw.PathwayExplainer(ctx.net).explain(ctx.x_small, sparsity=0.7)


@pytest.fixture(scope="module")
def e_vit(ctx):
    """The tiny ViT explained as the notebook does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SiteWarning)
        return cw.PathwayExplainer(ctx.vit).explain(ctx.x_small)


def _error_name(action) -> str:
    try:
        action()
    except errors.CritpathError as err:
        return type(err).__name__
    raise AssertionError("no error raised")


def _assert_wrong(result) -> None:
    assert not result
    assert "Hint" in result.message


def test_lab_is_registered(lab):
    assert lab is om.LAB and len(lab.exercises) >= 5


def test_q1_predicted_class(lab, ctx):
    with torch.no_grad():
        right = int(ctx.bundle.model(ctx.x).argmax(dim=1))
    assert lab.check("q1", right)
    _assert_wrong(lab.check("q1", (right + 1) % 1000))


def test_q1_the_weights_file_round_trips(ctx):
    """The bundle loaded from the saved file holds the seeded ResNet-18's weights."""
    import torchvision

    torch.manual_seed(om.SEED)
    fresh = torchvision.models.resnet18(weights=None).state_dict()
    loaded = ctx.bundle.model.state_dict()
    assert loaded.keys() == fresh.keys()
    for k, a in loaded.items():
        assert torch.equal(a, fresh[k]), k


def test_q2_site_count(lab, e_net):
    assert lab.check("q2", len(e_net.site_names))
    result = lab.check("q2", 3)
    _assert_wrong(result)
    assert "nn.ReLU module" in result.message
    assert "module hooks" in lab.check("q2", 1).message


def test_q3_site_neurons(lab, e_net):
    right = e_net.layer_summary()[e_net.site_names.index(om.SITE)].neurons
    assert lab.check("q3", right)
    result = lab.check("q3", 16)
    _assert_wrong(result)
    assert "channels" in result.message
    assert "stem" in lab.check("q3", 8192).message


def test_q4_weights_that_do_not_fit(lab, ctx):
    right = _error_name(lambda: cw.load_model("resnet34", weights=ctx.weights))
    assert right == "ModelError" and lab.check("q4", right)
    _assert_wrong(lab.check("q4", "InputError"))


def test_q5_no_batch_dimension(lab, ctx):
    right = _error_name(lambda: cw.PathwayExplainer(ctx.net).explain(ctx.x_small[0]))
    assert right == "InputError" and lab.check("q5", right)
    _assert_wrong(lab.check("q5", "InputTypeError"))
    _assert_wrong(lab.check("q5", "ModelError"))


def test_q6_pathway_logit(lab, e_net):
    e = e_net.at_sparsity(om.SPARSITY)
    t = int(e.target[0])
    assert lab.check("q6", float(e.pathway_logits[0, t]))
    assert "full network" in lab.check("q6", float(e.logits[0, t])).message
    assert "0.7" in lab.check("q6", float(e_net.pathway_logits[0, t])).message
    prob = float(e.pathway_logits[0].softmax(dim=0)[t])
    assert "probability" in lab.check("q6", prob).message


def test_q7_gelu_is_not_piecewise_linear(lab, e_vit):
    assert lab.check("q7", e_vit.piecewise_linear)
    assert e_vit.nonlinear_kinds == ["GELU"]
    _assert_wrong(lab.check("q7", not e_vit.piecewise_linear))


def test_q8_token_site_channels(lab, e_vit):
    assert lab.check("q8", len(e_vit.layer_summary()[0].channel_total))
    for wrong, words in [(17, "tokens"), (64, "hidden_dim"), (2176, "every neuron")]:
        result = lab.check("q8", wrong)
        _assert_wrong(result)
        assert words in result.message


def test_notebook_defines_the_lab_models():
    """The notebook's TinyNet is the lab module's, letter for letter."""
    nb = json.loads((notebook_dir() / NOTEBOOK).read_text(encoding="utf-8"))
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    for cls in (om.ConvBlock, om.TinyNet):
        assert inspect.getsource(cls).strip() in text


def test_notebook_instructor_version(tmp_path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, "instructor")
    print(f"\n{NOTEBOOK} instructor version: {seconds:.1f} s")
    out = "\n".join(texts)
    n = len(om.LAB.exercises)
    assert f"{n}/{n} exercises correct" in out
    assert "✗" not in out and "not answered" not in out
    assert (tmp_path / "my_resnet18.pt").is_file()


@pytest.mark.slow
def test_notebook_student_version(tmp_path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, "student")
    print(f"\n{NOTEBOOK} student version: {seconds:.1f} s")
    out = "\n".join(texts)
    assert f"0/{len(om.LAB.exercises)} exercises correct" in out
    assert "not answered yet" in out
