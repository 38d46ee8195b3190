"""Student and instructor versions of the lab notebooks, generated from one source.

The source notebooks (``notebooks/*.ipynb``) hold each exercise's solution between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines in a cell tagged ``solution``
(nbgrader's convention). The student version replaces each such region with
``answer = ...  # your code here`` (the variable the solution assigns last) and drops
cells tagged ``instructor``; the instructor version only drops the marker lines. Both
leave out outputs. Nothing is kept as a second copy by hand.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from ..errors import InputError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_TAG, INSTRUCTOR_TAG = "solution", "instructor"
#: the source notebooks (in :func:`notebook_dir`) that ``write_labs`` converts, in order
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_critical_pathways_lab.ipynb",
    "03_evaluation_lab.ipynb",
    "04_your_own_model.ipynb",
)
_ASSIGN = re.compile(r"^(\s*)([A-Za-z_]\w*)\s*=(?!=)")


def notebook_dir() -> Path:
    """Where the source notebooks are: inside the installed wheel, else the checkout's."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "notebooks", here.parent / "notebooks"):
        if (candidate / NOTEBOOKS[0]).is_file():
            return candidate
    raise InputError(
        "the lab notebooks are not installed beside critpath_widgets "
        f"(looked in {here / 'notebooks'} and {here.parent / 'notebooks'})"
    )


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _student_source(text: str) -> str:
    """``text`` with each solution region replaced by a ``name = ...`` placeholder."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if region is None:
                raise InputError(f"{END!r} without {BEGIN!r}")
            names = [
                m.group(2)
                for r in region
                if (m := _ASSIGN.match(r)) and len(m.group(1)) == len(indent)
            ]
            target = f"{names[-1]} = ..." if names else "..."
            out.append(f"{indent}{target}  # your code here")
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise InputError(f"{BEGIN!r} without {END!r}")
    return "\n".join(out)


def _instructor_source(text: str) -> str:
    return "\n".join(x for x in text.splitlines() if x.strip() not in (BEGIN, END))


def _clean(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    if cell.get("cell_type") == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def student_version(nb: dict) -> dict:
    """The notebook a student gets: no solutions, no instructor notes, no outputs."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        if INSTRUCTOR_TAG in _tags(cell):
            continue
        cell = _clean(cell)
        if SOLUTION_TAG in _tags(cell):
            cell["source"] = _student_source(_source(cell))
        cells.append(cell)
    nb["cells"] = cells
    return nb


def instructor_version(nb: dict) -> dict:
    """The notebook with its solutions and instructor notes, marker lines removed."""
    nb = copy.deepcopy(nb)
    nb["cells"] = [_clean(c) for c in nb["cells"]]
    for cell in nb["cells"]:
        if SOLUTION_TAG in _tags(cell):
            cell["source"] = _instructor_source(_source(cell))
    return nb


def write_labs(
    dest: str | Path, instructor: bool = False, source: str | Path | None = None
) -> list[Path]:
    """Write the student (or instructor) versions of the notebooks into ``dest``."""
    src = Path(source) if source is not None else notebook_dir()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    convert = instructor_version if instructor else student_version
    written = []
    for name in NOTEBOOKS:
        nb = json.loads((src / name).read_text(encoding="utf-8"))
        out = dest / name
        out.write_text(
            json.dumps(convert(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(out)
    return written
