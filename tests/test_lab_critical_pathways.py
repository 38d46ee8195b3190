"""Lab 02 (critical pathways): every exercise accepts the solution route and rejects a
common wrong one with a hint; the notebook runs in both versions."""

from __future__ import annotations

import pytest
import torch

from critpath_widgets import evaluation as ev
from critpath_widgets.labs import open_lab
from critpath_widgets.labs.critical_pathways import centre_direction, pathway_network

from .lab_notebooks import run_notebook

NOTEBOOK = "02_critical_pathways_lab.ipynb"


@pytest.fixture(scope="module")
def lab():
    """One lab (its context cached) for the whole module."""
    return open_lab("critical_pathways")


@pytest.fixture(scope="module")
def c(lab):
    """The lab's context: model, photo, explainer, NeuronMCT explanation."""
    return lab.context


def _wrong(lab, qid, answer):
    r = lab.check(qid, answer)
    assert not r and "Hint" in r.message, r.message
    return r.message


def test_q1_site_neurons(lab, c):
    site = next(s for s in c.e.layer_summary() if s.label == "block 1 · ReLU6 #2")
    assert lab.check("q1", site.neurons)
    assert "channels" in _wrong(lab, "q1", site.shape[0])


def test_q2_kept_contribution(lab, c):
    e = c.e
    kept = sum(float((s * m).sum()) for s, m in zip(e.scores, e.pathway.masks, strict=True))
    total = sum(float(s.sum()) for s in e.scores)
    assert lab.check("q2", kept / total)
    assert "neurons kept" in _wrong(lab, "q2", 0.3)
    assert "removed" in _wrong(lab, "q2", 1 - kept / total)


def test_q3_jaccard_mct_intgrad(lab, c):
    j = ev.jaccard(c.e, c.intgrad).overall
    assert lab.check("q3", j)
    assert "itself" in _wrong(lab, "q3", 1.0)
    assert "union" in _wrong(lab, "q3", 2 * j / (1 + j))


def test_q4_pathway_logit(lab, c):
    t = c.target
    assert lab.check("q4", c.e.at_sparsity(0.95).pathway_logits[0, t])
    assert "full network" in _wrong(lab, "q4", c.e.logits[0, t])
    assert "0.7" in _wrong(lab, "q4", c.e.pathway_logits[0, t])


def test_q5_cosine_with_plain_gradient(lab, c):
    g = c.ex.gradient(c.x).flatten()
    cos = torch.nn.functional.cosine_similarity
    assert lab.check("q5", cos(c.e.at_sparsity(0.9).saliency.flatten(), g, dim=0))
    assert "sparsity 0," in _wrong(
        lab, "q5", cos(c.e.at_sparsity(0.0).saliency.flatten(), g, dim=0)
    )


def test_q6_global_share_of_the_stem(lab, c):
    share = c.e.at_sparsity(0.9).layer_summary()[0].kept_pct / 100
    assert lab.check("q6", share)
    assert "per-layer" in _wrong(lab, "q6", 0.1)
    assert "removed" in _wrong(lab, "q6", 1 - share)


def test_q7_dead_share_of_dgr(lab, c):
    assert lab.check("q7", ev.dead_share(c.dgr).overall)
    assert "NeuronMCT" in _wrong(lab, "q7", ev.dead_share(c.e).overall)
    assert "ALL" in _wrong(lab, "q7", ev.dead_share(c.dgr).network_overall)


def test_q8_finite_difference_matches_the_pathway_gradient(lab, c):
    f, d, h, t = pathway_network(c.e), centre_direction(c.x), 1e-3, c.target
    fd = (f(c.x + h * d)[0, t] - f(c.x - h * d)[0, t]) / (2 * h)
    assert lab.check("q8", fd)
    assert lab.check("q8", (c.e.saliency * d).sum())  # the linear model says the same
    assert "plain gradient" in _wrong(lab, "q8", (c.ex.gradient(c.x) * d).sum())
    assert "2 h" in _wrong(lab, "q8", 2 * h * fd)


def test_pathway_network_is_the_engines_restricted_network(c):
    f = pathway_network(c.e)
    with torch.no_grad():
        got = f(c.x)[0, c.target]
    assert float(got) == pytest.approx(float(c.e.pathway_logits[0, c.target]), rel=1e-4)


def test_q9_random_control(lab, c):
    er = c.ex.explain(c.x, method="random", sparsity=0.7, seed=0)
    assert lab.check("q9", er.pathway_logits[0, c.target])
    assert "NeuronMCT" in _wrong(lab, "q9", c.e.pathway_logits[0, c.target])
    assert "full network" in _wrong(lab, "q9", c.e.logits[0, c.target])


def test_instructor_notebook_gets_everything_right(tmp_path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, "instructor")
    print(f"\n{NOTEBOOK} instructor version: {seconds:.1f} s")
    text = "\n".join(texts)
    assert "Critical pathways lab: 9/9 exercises correct" in text, text[-3000:]
    assert "✗" not in text and "not answered" not in text, text


@pytest.mark.slow
def test_student_notebook_runs_through_with_nothing_answered(tmp_path):
    texts, seconds = run_notebook(NOTEBOOK, tmp_path, "student")
    print(f"\n{NOTEBOOK} student version: {seconds:.1f} s")
    text = "\n".join(texts)
    assert "Critical pathways lab: 0/9 exercises correct" in text, text[-3000:]
    assert "not answered yet" in text


def test_pathway_network_refuses_what_is_not_an_explanation():
    from critpath_widgets.errors import InputTypeError

    with pytest.raises(InputTypeError, match="Explanation"):
        pathway_network("e")
