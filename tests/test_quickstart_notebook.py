"""notebooks/01_quickstart.ipynb runs top to bottom in an empty folder, offline."""

from __future__ import annotations

import json

from critpath_widgets.labs import notebook_dir
from tests.lab_notebooks import run_notebook


def test_quickstart_layout():
    """Title first (with its run time), then the explorer as the first code cell."""
    cells = json.loads((notebook_dir() / "01_quickstart.ipynb").read_text(encoding="utf-8"))[
        "cells"
    ]
    assert cells[0]["cell_type"] == "markdown"
    title = "".join(cells[0]["source"])
    assert title.startswith("# ") and "**Run time:** about" in title
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert "PathwayExplorer()" in "".join(first_code["source"])


def test_quickstart_runs(tmp_path):
    texts, seconds = run_notebook("01_quickstart.ipynb", tmp_path)
    print(f"\n[quickstart] ran in {seconds:.1f} s")
    joined = "\n".join(texts)
    assert "PathwayExplorer" in joined and "Figure" in joined, joined
    assert list(tmp_path.iterdir()) == []  # nothing written beside the notebook
