"""The lab framework: checks against live values with hints, and the two notebook versions."""

from __future__ import annotations

import json
import re

import pytest
import torch

from critpath_widgets.cli import main
from critpath_widgets.errors import InputError
from critpath_widgets.labs import (
    NOTEBOOKS,
    Exercise,
    Lab,
    Mistake,
    instructor_version,
    notebook_dir,
    open_lab,
    student_version,
    write_labs,
)


def _toy_lab(calls: list[int]) -> Lab:
    def setup():
        calls.append(1)
        return {"w": torch.tensor([2.0, -1.0, 0.5])}

    return Lab(
        "toy",
        "Toy lab",
        setup,
        [
            Exercise(
                "q1",
                "The sum of w.",
                lambda c: c["w"].sum(),
                hint="add all three",
                mistakes=[Mistake(lambda c: c["w"].abs().sum(), "keep the signs")],
            ),
            Exercise(
                "q2", "How many entries are positive?", lambda c: (c["w"] > 0).sum(), kind="int"
            ),
            Exercise(
                "q3",
                "Which entries are positive?",
                lambda c: (c["w"] > 0).nonzero()[:, 0],
                kind="set",
            ),
            Exercise("q4", "Is w's sum positive?", lambda c: bool(c["w"].sum() > 0), kind="bool"),
            Exercise(
                "q5",
                "Largest entry: first or second?",
                lambda c: "first",
                kind="choice",
                choices=["first", "second"],
            ),
        ],
    )


def test_a_check_compares_with_the_live_value_and_hints_when_wrong():
    calls: list[int] = []
    lab = _toy_lab(calls)
    assert lab.check("q1", 1.5) and lab.check("q1", torch.tensor(1.5001))
    wrong = lab.check("q1", 3.5)  # |w| summed: the mistake's own hint
    assert not wrong and "keep the signs" in wrong.message
    other = lab.check("q1", 7.0)
    assert not other and "add all three" in other.message
    assert lab.check("q2", 2) and not lab.check("q2", 2.5)
    assert lab.check("q3", [2, 0]) and lab.check("q3", torch.tensor([0, 2]))
    assert not lab.check("q3", [0])
    assert lab.check("q4", True) and not lab.check("q4", False)
    assert lab.check("q5", " First ") and not lab.check("q5", "second")
    assert calls == [1], "the context is built once"


def test_the_expected_value_follows_the_context_not_a_constant():
    calls: list[int] = []
    lab = _toy_lab(calls)
    assert lab.check("q1", 1.5)
    lab.context["w"][0] = 10.0  # the same question, another model state: another answer
    assert not lab.check("q1", 1.5) and lab.check("q1", 9.5)


def test_unanswered_wrongly_typed_and_unknown_answers_are_worded():
    calls: list[int] = []
    lab = _toy_lab(calls)
    r = lab.check("q1", ...)
    assert not r and not r.answered and "not answered yet" in r.message
    assert calls == [], "an unanswered exercise builds no context (the student version is quick)"
    r = lab.check("q1", "1.5")
    assert not r and "expected a number" in r.message
    r = lab.check("q1", torch.ones(3))
    assert not r and "one number" in r.message
    r = lab.check("q5", "third")
    assert not r and "first" in r.message
    r = lab.check("q4", 1)
    assert not r and "True or False" in r.message
    with pytest.raises(InputError, match="no exercise 'q9'"):
        lab.check("q9", 1)
    with pytest.raises(InputError, match="no lab called"):
        open_lab("nope")
    assert "0/5" in lab.summary() and "q1" in lab.summary()
    lab.check("q1", 1.5)
    assert "1/5" in lab.summary()


def _nb(cells: list[dict]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def _code(src: str, tags=(), outputs=()) -> dict:
    return {
        "cell_type": "code",
        "source": src,
        "metadata": {"tags": list(tags)},
        "outputs": list(outputs),
        "execution_count": 3,
    }


SOLUTION = (
    "x = 1\n    ### BEGIN SOLUTION\n    y = x + 1\n    answer = y * 2\n"
    '    ### END SOLUTION\ncheck("q1", answer)'
)


def test_student_and_instructor_versions_come_from_one_source():
    src = _nb(
        [
            _code(SOLUTION, tags=["solution"], outputs=[{"output_type": "stream", "text": "hi"}]),
            {
                "cell_type": "markdown",
                "source": "the answer is 4",
                "metadata": {"tags": ["instructor"]},
            },
            _code("print(1)"),
        ]
    )
    student = student_version(src)
    assert [c["cell_type"] for c in student["cells"]] == ["code", "code"]
    first = student["cells"][0]["source"]
    assert "answer = ...  # your code here" in first and "y * 2" not in first
    assert "SOLUTION" not in first and first.startswith("x = 1") and 'check("q1"' in first
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in student["cells"])
    teacher = instructor_version(src)
    assert len(teacher["cells"]) == 3
    assert "answer = y * 2" in teacher["cells"][0]["source"]
    assert "SOLUTION" not in teacher["cells"][0]["source"]
    assert src["cells"][0]["outputs"], "the source is not modified"
    broken = _nb([_code("### BEGIN SOLUTION\nanswer = 1", tags=["solution"])])
    with pytest.raises(InputError, match="without"):
        student_version(broken)


def test_write_labs_from_a_source_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in NOTEBOOKS:
        (src / name).write_text(json.dumps(_nb([_code(SOLUTION, tags=["solution"])])))
    out = write_labs(tmp_path / "out", source=src)
    assert [p.name for p in out] == list(NOTEBOOKS)
    assert "answer = ..." in json.loads(out[1].read_text())["cells"][0]["source"]


def _checked_ids(nb: dict) -> tuple[str | None, list[str]]:
    text = "\n".join(
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )
    name = re.search(r'open_lab\("(\w+)"\)', text)
    return (name.group(1) if name else None), re.findall(r'check\("(\w+)"', text)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_checks_every_exercise_of_its_lab(name):
    nb = json.loads((notebook_dir() / name).read_text(encoding="utf-8"))
    lab_name, ids = _checked_ids(nb)
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert nb["cells"][0]["cell_type"] == "markdown" and "Run time" in "".join(
        nb["cells"][0]["source"]
    ), "the first cell is the title, with the run time"
    if lab_name is None:
        assert name == "01_quickstart.ipynb" and "PathwayExplorer" in "".join(first_code["source"])
        return
    lab = open_lab(lab_name)
    assert sorted(set(ids)) == sorted(lab.exercises), "every exercise checked, nothing else"
    if name.startswith(("02", "03")):
        assert len(lab.exercises) >= 5
    student = student_version(nb)
    for cell in student["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        assert "SOLUTION" not in src


def test_critpath_labs_writes_student_or_instructor_versions(tmp_path, capsys):
    assert main(["labs", str(tmp_path / "s")]) == 0
    assert main(["labs", str(tmp_path / "i"), "--instructor"]) == 0
    for name in NOTEBOOKS:
        assert (tmp_path / "s" / name).is_file() and (tmp_path / "i" / name).is_file()
    lab = json.loads((tmp_path / "s" / NOTEBOOKS[1]).read_text())
    teacher = json.loads((tmp_path / "i" / NOTEBOOKS[1]).read_text())
    assert "# your code here" in json.dumps(lab) and "# your code here" not in json.dumps(teacher)
    assert main(["labs", str(tmp_path / "s")]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["labs", str(tmp_path / "s"), "--force"]) == 0
    (tmp_path / "f").write_text("")
    assert main(["labs", str(tmp_path / "f")]) == 2
    assert "not a folder" in capsys.readouterr().err
