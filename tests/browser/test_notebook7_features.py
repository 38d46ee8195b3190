"""The explorer's JupyterLab browser tests again in Jupyter Notebook 7.

The tests are imported from their JupyterLab modules and run here against a Notebook 7
server: this module overrides the ``notebook_root`` and ``jupyter`` fixtures that the
shared ``explorer`` (conftest) and ``panel_page`` (test_layer_panel) fixtures build on,
so the very same checks open ``/notebooks/<name>`` instead of ``/lab/tree/<name>``:
the target picker over all classes, tooltips and help, the upload state, the
comparison view, the refresh after a weight edit, and the layer chart's hit columns and
deselection. (The column-width test stays JupyterLab-only: it folds Lab's side panel.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import harness as H
import pytest
import test_compare
import test_controls
import test_layer_panel
import test_refresh
from test_notebook7 import _known_notebook_error

pytestmark = pytest.mark.browser

# the checks, in the order their JupyterLab modules run them (pytest keeps this order;
# the layer panel's tests build on each other's selection)
test_opening_the_section_paints_one_overlay_per_method = (
    test_compare.test_opening_the_section_paints_one_overlay_per_method
)
test_controls_have_tooltips_and_help = test_controls.test_controls_have_tooltips_and_help
test_target_picker_finds_a_class_outside_the_top5 = (
    test_controls.test_target_picker_finds_a_class_outside_the_top5
)
test_upload_keeps_picker_and_button_consistent = (
    test_controls.test_upload_keeps_picker_and_button_consistent
)
test_short_bar_column_is_hit = test_layer_panel.test_short_bar_column_is_hit
test_click_outside_the_columns_keeps_the_selection = (
    test_layer_panel.test_click_outside_the_columns_keeps_the_selection
)
test_deselect_clears_caption_and_ticks = test_layer_panel.test_deselect_clears_caption_and_ticks
test_weight_edit_is_picked_up_without_a_click = (
    test_refresh.test_weight_edit_is_picked_up_without_a_click
)


@pytest.fixture(scope="module")
def notebook_root():
    """A temp dir of its own holding a copy of the notebook under test."""
    root = Path(tempfile.mkdtemp(prefix="critpath-e2e-nb7-features-"))
    name = H.copy_notebook(root, H.notebook_under_test())
    yield root, name
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def jupyter(notebook_root):
    """A Notebook 7 server (``jupyter notebook``) on that dir; stopped on every path."""
    try:
        H.check_frontend_bundle()
        H.check_app("notebook")
    except H.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    root, _ = notebook_root
    try:
        with H.jupyter_server(root, app="notebook") as server:
            yield server
    except H.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def panel_page(browser, jupyter, notebook_root):
    """The layer panel's notebook in Notebook 7 (its own load-time page error left out)."""
    with test_layer_panel.open_panel(
        browser, jupyter, notebook_root[0], known_error=_known_notebook_error
    ) as opened:
        yield opened


def test_this_is_notebook7(explorer):
    """The pages these tests drive are Notebook 7's, not JupyterLab's."""
    info = H.app_info(explorer.page)
    assert info and info["name"] == "Jupyter Notebook", info
    assert info["version"].split(".")[0] == "7", info
    assert "/notebooks/" in explorer.page.url, explorer.page.url
