"""Classroom labs: exercises that check themselves against values computed live.

In a lab notebook::

    from critpath_widgets.labs import open_lab
    lab = open_lab("critical_pathways")
    check = lab.check
    ...
    check("q3", answer)      # ✓ correct, or ✗ with a hint; never a hard-coded number

``write_labs(dir)`` (``critpath labs DIR``) writes the student versions of the notebooks,
``write_labs(dir, instructor=True)`` those with the solutions, both from the same source.
"""

from __future__ import annotations

import importlib

from ..errors import InputError
from .exercises import CheckResult, Exercise, Mistake
from .lab import Lab
from .notebooks import NOTEBOOKS, instructor_version, notebook_dir, student_version, write_labs

LABS = {
    "critical_pathways": "critpath_widgets.labs.critical_pathways",
    "evaluation": "critpath_widgets.labs.evaluation_lab",
    "own_model": "critpath_widgets.labs.own_model",
}
"""Lab name -> module defining ``LAB``; one Lab (and one cached context) per kernel."""


def open_lab(name: str) -> Lab:
    """The lab called ``name`` (one of :data:`LABS`), its context built on first check."""
    if name not in LABS:
        raise InputError(f"no lab called {name!r}; the labs are {', '.join(LABS)}")
    return importlib.import_module(LABS[name]).LAB


__all__ = [
    "open_lab",
    "Lab",
    "Exercise",
    "Mistake",
    "CheckResult",
    "LABS",
    "NOTEBOOKS",
    "write_labs",
    "student_version",
    "instructor_version",
    "notebook_dir",
]
