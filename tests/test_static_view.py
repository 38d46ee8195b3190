"""Where widgets cannot run, the explorer's output is a picture of its view: its bundle
carries a PNG drawn by save() next to the widget view, and nbconvert's HTML of a
notebook executed without saved widget state shows that PNG."""

from __future__ import annotations

import base64
import io
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from critpath_widgets import PathwayExplorer
from critpath_widgets.widgets.explorer.static_view import PNG, TEXT

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TIMEOUT = 120


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5)
    ).eval()


def _png(bundle: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(bundle[PNG])))


def test_bundle_has_the_widget_view_and_a_png_of_what_is_on_show(tmp_path):
    w = PathwayExplorer(_model(), image=torch.randn(1, 3, 16, 16), method="random")
    try:
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        bundle = w._repr_mimebundle_()
        assert bundle[WIDGET_VIEW]["model_id"] == w.model_id
        assert "Random" in bundle[TEXT] and "sparsity 0.70" in bundle[TEXT]
        shown = _png(bundle)
        # the same figure as save() (same size at the same dpi)
        saved = Image.open(w.save(tmp_path / "view.png", dpi=72))
        assert shown.size == saved.size
        # its pixels follow save()'s (a palette copy: colours close, not equal)
        a = np.asarray(shown.convert("RGB"), dtype=np.float32)
        b = np.asarray(saved.convert("RGB"), dtype=np.float32)
        assert np.abs(a - b).mean() < 6.0
        # another view gives another picture
        w.sparsity = 0.2
        assert w.wait(TIMEOUT)
        again = w._repr_mimebundle_()
        assert "sparsity 0.20" in again[TEXT] and again[PNG] != bundle[PNG]
        assert PNG not in w._repr_mimebundle_(exclude={PNG})
        assert PNG not in w._repr_mimebundle_(include={WIDGET_VIEW, TEXT})
    finally:
        w.close()


def test_no_png_before_a_result_is_on_show_and_nothing_is_computed(monkeypatch):
    from critpath_widgets.widgets.explorer.session import ExplainSession

    release = threading.Event()
    score = ExplainSession.score

    def held(self, *args, **kwargs):
        release.wait(TIMEOUT)
        return score(self, *args, **kwargs)

    monkeypatch.setattr(ExplainSession, "score", held)
    w = PathwayExplorer(_model(), image=torch.randn(1, 3, 16, 16))
    try:
        bundle = w._repr_mimebundle_()  # the first result is held back
        assert PNG not in bundle and WIDGET_VIEW in bundle
        assert "computing" in bundle[TEXT] and "wait()" in bundle[TEXT]
        assert w._session.stats["explain"] == 0
        release.set()
        assert w.wait(TIMEOUT) and w.last_error is None
        assert w._session.stats["explain"] == 1
        assert PNG in w._repr_mimebundle_()
        assert w._session.stats["explain"] == 1  # the picture computed nothing
    finally:
        release.set()
        w.close()


def _notebook(cells: list[str]):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nb


@pytest.mark.skipif(sys.platform == "win32", reason="kernel start-up is slow there")
def test_nbconvert_html_without_widget_state_shows_the_png(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    import nbconvert

    setup = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import torch\nfrom torch import nn\nfrom critpath_widgets import PathwayExplorer\n"
        "torch.manual_seed(0)\n"
        "m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),"
        " nn.Flatten(), nn.Linear(24, 5)).eval()\n"
        "w = PathwayExplorer(m, image=torch.randn(1, 3, 16, 16))\n"
        "w.wait(120)"
    )
    nb = _notebook([setup, "w"])
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", store_widget_state=False
    )
    client.execute(cwd=str(tmp_path))
    outputs = nb.cells[1].outputs
    data = next(o["data"] for o in outputs if o.get("output_type") == "execute_result")
    assert WIDGET_VIEW in data and PNG in data  # a live front end still gets the widget
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    imgs = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=\n]+)"', html)
    assert imgs, "no PNG in the HTML"
    picture = Image.open(io.BytesIO(base64.b64decode(imgs[-1])))
    assert picture.size[0] > 300 and picture.size[1] > 200
    assert data[WIDGET_VIEW]["model_id"] not in html  # the widget view was left out
