"""Lab 3 (evaluation): every exercise takes the answer a student computes by the
notebook's route and turns down a common wrong one with a hint; the notebook runs
through, instructor version all correct, student version none answered."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import critpath_widgets as cw
from critpath_widgets import evaluation as ev
from critpath_widgets.labs import evaluation_lab as el
from critpath_widgets.labs import open_lab

from .lab_notebooks import run_notebook

pytest.importorskip("captum")  # the baselines (gradient, Grad-CAM, guided backprop)

NOTEBOOK = "03_evaluation_lab.ipynb"
STEPS = 10


@pytest.fixture(scope="module")
def lab():
    """The lab, its context built once for the module."""
    return open_lab("evaluation")


@pytest.fixture(scope="module")
def student() -> SimpleNamespace:
    """What the notebook computes, by the notebook's own calls (the students' route)."""
    bundle = cw.load_model()
    model = bundle.model
    x = bundle.preprocess(cw.sample_image("coffee"))[None]
    with torch.no_grad():
        target = int(model(x).argmax())
    e = cw.PathwayExplainer(model).explain(x, target, method="neuron_mct", sparsity=0.7)
    maps = {
        "pathway": e.saliency,
        "gradient": cw.attribute(model, x, "gradient", target),
        "gradcam": cw.attribute(model, x, "gradcam", target),
    }
    curve = {"target": target, "steps": STEPS}
    return SimpleNamespace(
        dels={name: ev.deletion(model, x, m, **curve) for name, m in maps.items()},
        i_path=ev.insertion(model, x, maps["pathway"], **curve),
        i_rand=ev.random_baseline(model, x, "insertion", **curve),
        d_rand=ev.random_baseline(model, x, "deletion", **curve),
        s=ev.sanity_check(
            model,
            x,
            ["pathway_mct", "gradient", "guided_backprop", "gradcam"],
            target=target,
            metrics=("spearman", "spearman_abs", "ssim"),
            layers=3,
        ),
    )


def _right_and_wrong(lab, qid: str, right, wrong) -> None:
    """``right`` is accepted; ``wrong`` is not, and its message carries a hint."""
    ok = lab.check(qid, right)
    assert ok, ok.message
    bad = lab.check(qid, wrong)
    assert not bad and "Hint" in bad.message, bad.message


def test_q1_deletion_auc(lab, student):
    d = student.dels["pathway"]
    _right_and_wrong(lab, "q1", d.auc[0], student.i_path.auc[0])  # insertion instead
    assert "insertion AUC" in lab.check("q1", student.i_path.auc[0]).message
    wrong_logits = float(np.trapezoid(d.logits[0], d.fractions))
    assert "logit" in lab.check("q1", wrong_logits).message


def test_q2_lowest_deletion(lab, student):
    aucs = {name: d.auc[0] for name, d in student.dels.items()}
    right = min(aucs, key=aucs.get)
    worst = max(aucs, key=aucs.get)
    _right_and_wrong(lab, "q2", right, worst)
    assert "lower is better" in lab.check("q2", worst).message


def test_q3_fraction_left(lab, student):
    p = student.dels["pathway"].scores[0]
    _right_and_wrong(lab, "q3", p[1] / p[0], 1 - p[1] / p[0])
    assert "fraction lost" in lab.check("q3", 1 - p[1] / p[0]).message
    logits = student.dels["pathway"].logits[0]
    assert "logits" in lab.check("q3", logits[1] / logits[0]).message


def test_q4_insertion_minus_random(lab, student):
    right = student.i_path.auc[0] - student.i_rand.auc[0]
    _right_and_wrong(lab, "q4", right, -right)
    assert "sign" in lab.check("q4", -right).message
    wrong_kind = student.i_path.auc[0] - student.d_rand.auc[0]
    assert "same kind" in lab.check("q4", wrong_kind).message


def test_q5_lerf(lab, student):
    scores = student.i_path.scores[0]
    right = abs(scores[-2] - scores[-1]) / scores[-1]
    _right_and_wrong(lab, "q5", right, abs(scores[-2] - scores[-1]))
    assert "relative" in lab.check("q5", abs(scores[-2] - scores[-1])).message
    morf = student.dels["pathway"].scores[0]
    assert "MOST relevant" in lab.check("q5", abs(morf[1] - morf[0]) / morf[0]).message


def test_q6_sanity_ssim(lab, student):
    sim = student.s.similarity
    _right_and_wrong(lab, "q6", sim["pathway_mct"]["ssim"][-1], sim["pathway_mct"]["ssim"][1])
    assert "first step" in lab.check("q6", sim["pathway_mct"]["ssim"][1]).message
    assert "always 1" in lab.check("q6", 1.0).message


def test_q7_sanity_fails(lab, student):
    s = student.s
    right = {m for m in s.methods if s.similarity[m]["spearman_abs"][1] >= 0.9}
    assert right == {"guided_backprop"}  # the paper's finding, on this model too
    _right_and_wrong(lab, "q7", right, set(s.methods) - right)
    assert "pass" in lab.check("q7", set(s.methods) - right).message
    assert "step 0" in lab.check("q7", set(s.methods)).message


def test_expected_values_come_from_an_independent_route(lab, student):
    """The hand-written masked copies agree with the evaluation module's curves."""
    ctx = lab.context
    assert lab.expected("q1") == pytest.approx(student.dels["pathway"].auc[0], rel=1e-4)
    p = student.dels["pathway"].scores[0]
    assert lab.expected("q3") == pytest.approx(p[1] / p[0], rel=1e-4)
    assert ctx.p0 == pytest.approx(p[0], rel=1e-5)
    assert el.lowest_deletion(ctx) in el.MAPS


def test_unanswered_is_not_right(lab):
    r = lab.check("q1", ...)
    assert not r and not r.answered and "not answered" in r.message


@pytest.mark.slow
def test_instructor_notebook_all_correct(tmp_path: Path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, version="instructor")
    print(f"\n{NOTEBOOK} (instructor) ran in {seconds:.0f} s")
    out = "\n".join(texts)
    assert "7/7 exercises correct" in out, out[-2000:]
    assert "✗" not in out and "not answered" not in out
    assert "Evaluation done." in out  # the explorer's evaluation panel ran


@pytest.mark.slow
def test_student_notebook_runs_through(tmp_path: Path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, version="student")
    print(f"\n{NOTEBOOK} (student) ran in {seconds:.0f} s")
    out = "\n".join(texts)
    assert "0/7 exercises correct" in out, out[-2000:]
    assert out.count("not answered yet") == 7
