"""JupyterLab shows the live explorer, not its static PNG, when the output carries both.

An explorer displayed after ``wait()`` has a result on show, so its output bundle holds
the widget view *and* an ``image/png`` of that view (for front ends without widgets).
The page must render the widget (painted overlay) and no image for that output.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import harness as H
import pytest

pytestmark = pytest.mark.browser

NAME = "static_view.ipynb"
CELLS = [
    "from critpath_widgets import PathwayExplorer\n\n"
    "explorer = PathwayExplorer()\nexplorer.wait(300)",
    "bundle = explorer._repr_mimebundle_()\nsorted(bundle)",
    "explorer",
]


def _write_notebook(root: Path) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
        for c in CELLS
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / NAME).write_text(json.dumps(nb))


def test_jupyterlab_renders_the_widget_not_the_png(browser):
    try:
        H.check_frontend_bundle()
    except H.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="critpath-static-"))
    _write_notebook(root)
    page = browser.new_page()
    try:
        with H.jupyter_server(root) as server:
            H.open_notebook(page, server, NAME)
            H.run_all_cells(page)
            H.wait_painted(page, H.PATHWAY_OVERLAY, timeout_ms=300_000)
            H.wait_kernel_idle(page, 120_000)
            # the bundle did carry a PNG next to the widget view
            keys = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").inner_text()
            assert "image/png" in keys and "widget-view+json" in keys, keys
            last = page.locator(".jp-Cell").nth(2)
            assert last.locator(".critpath-explorer").count() == 1
            assert last.locator(".jp-RenderedImage img").count() == 0
            shot = H.ARTIFACTS / "static-view-lab.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            last.screenshot(path=str(shot))
    finally:
        page.close()
        shutil.rmtree(root, ignore_errors=True)
