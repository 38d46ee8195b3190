"""Run a lab notebook, student or instructor version, in a fresh kernel in an empty folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from critpath_widgets.labs import instructor_version, notebook_dir, student_version


def run_notebook(
    name: str, workdir: Path, version: str = "instructor", timeout: int = 900
) -> tuple[list[str], float]:
    """Execute ``name``'s ``version`` in ``workdir``; every output's text, and seconds taken.

    The folder is empty, so a notebook that leans on files of the checkout fails here.
    """
    source = json.loads((notebook_dir() / name).read_text(encoding="utf-8"))
    assert all(not c.get("outputs") for c in source["cells"] if c["cell_type"] == "code"), (
        f"{name} is committed with outputs"
    )
    convert = instructor_version if version == "instructor" else student_version
    nb = nbformat.reads(json.dumps(convert(source)), as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    elapsed = time.perf_counter() - start
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            data = out.get("data", {})
            texts.append(
                "".join(data.get("text/markdown", "")) or "".join(data.get("text/plain", ""))
            )
    return [t for t in texts if t], elapsed
