"""The demonstration notebooks run top to bottom offline and show what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(name: str) -> list[str]:
    """Execute ``name`` in a fresh kernel; the text of every stream output, in order."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs"
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return ["".join(o.get("text", "")) for c in nb.cells for o in c.get("outputs", [])]


def test_interventions_demo_knocks_out_the_top_channels():
    text = "\n".join(_run("interventions_demo.ipynb"))
    rows = dict(re.findall(r"^(pathway|full)\s+p\(espresso\) ([\d.]+ -> [\d.]+)", text, re.M))
    assert set(rows) == {"pathway", "full"}, text
    for network, change in rows.items():
        before, after = (float(v) for v in change.split(" -> "))
        assert after < before, (network, before, after)
    random_p = float(re.search(r"random pathway: p\(espresso\) = ([\d.]+)", text).group(1))
    assert random_p < 0.1 < float(rows["pathway"].split(" -> ")[1])
