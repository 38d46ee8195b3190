"""The layer panel in JupyterLab, driven in a real Chromium: a short bar's column can be
hit, a click outside the columns leaves no stale caption or ticks, hover names the site.

A notebook written here shows a ``LayerContributions`` panel of the default model
(EfficientNet-Lite0) on the "coffee" photo, whose site bars are mostly a pixel or two
tall. Run with ``python -m pytest tests/browser/test_layer_panel.py -q -s``.
"""

from __future__ import annotations

import contextlib
import json

import harness as H
import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = "layer_panel.ipynb"
SETUP = """\
import numpy as np
from critpath_widgets import LayerContributions, PathwayExplainer
from critpath_widgets.models import load_model, sample_image

bundle = load_model()
photo = sample_image("coffee")
e = PathwayExplainer(bundle.model).explain(bundle.preprocess(photo)[None], sparsity=0.7)
panel = LayerContributions(e, bundle.crop(photo))
totals = np.array([s.total for s in panel.summary])
panel"""
PANEL = ".critpath-layer-contributions"
CHART = f"{PANEL} {H.LAYER_CHART}"
DETAILS = f"{PANEL} .critpath-layer-details"
CHANNELS = f"{PANEL} .critpath-channel-chart"

#: the columns of the site chart: per site the rect of the hit mark (the last mark, one
#: rect per bar group) and the visible bar's height (the other mark, stacked rects)
COLUMNS_JS = """(sel) => {
    const root = document.querySelector(sel);
    const marks = [...new Set([...root.querySelectorAll('.bargroup')]
        .map(g => g.parentElement))];  // one container per mark, in drawing order
    const groups = m => [...m.querySelectorAll(':scope > .bargroup')];
    const hits = groups(marks[marks.length - 1]).map(g => g.querySelector('rect'));
    const shown = groups(marks[0]).map(g => [...g.querySelectorAll('rect')]
        .reduce((h, r) => h + r.getBoundingClientRect().height, 0));
    return hits.map((r, i) => { const b = r.getBoundingClientRect();
        return {x: b.x, y: b.y, width: b.width, height: b.height, shown: shown[i],
                marks: marks.length}; });
}"""


def _write_notebook(root) -> None:
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": []}
    nb = {
        "cells": [{**cell, "source": SETUP}],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / NOTEBOOK).write_text(json.dumps(nb))


@contextlib.contextmanager
def open_panel(browser, jupyter, root, known_error=None):
    """The notebook written to ``root``, opened and run, the site chart drawn: yields
    (page, errors); ``known_error(message, stack)`` marks a front end's own load-time
    page error (Notebook 7's) to leave out of ``errors``."""
    _write_notebook(root)
    page = browser.new_page()
    errors = H.PageErrors().attach(page)
    try:
        H.open_notebook(page, jupyter, NOTEBOOK)
        H.run_all_cells(page)
        page.wait_for_function(
            f"() => document.querySelectorAll('{CHART} svg .bargroup').length > 40",
            timeout=180_000,
        )
        page.wait_for_timeout(1000)  # let the bars' transition end
        if known_error is not None:
            kept = [
                (m, st)
                for m, st in zip(errors.page_errors, errors.page_error_stacks, strict=True)
                if not known_error(m, st)
            ]
            errors.page_errors[:] = [m for m, _ in kept]
            errors.page_error_stacks[:] = [st for _, st in kept]
        yield page, errors
    finally:
        try:
            H.save_explorer_screenshot(page, H.ARTIFACTS / "layer-panel.png")
        except Exception as exc:  # noqa: BLE001 - a screenshot must not mask the result
            print(f"\n[layers] screenshot failed: {exc}")
        page.close()


@pytest.fixture(scope="module")
def panel_page(browser, jupyter, notebook_root):
    """The notebook opened and run, the site chart drawn."""
    with open_panel(browser, jupyter, notebook_root[0]) as opened:
        yield opened


def _columns(page) -> list[dict]:
    return page.evaluate(COLUMNS_JS, CHART)


def _visible_ticks(page) -> list[str]:
    """The tick texts of the channel chart that a person sees."""
    return page.eval_on_selector_all(
        f"{CHANNELS} .axis .tick text",
        # (an SVG element under a display: none group has no box)
        """ts => ts.filter(t => t.getBoundingClientRect().width > 0
            && t.closest('[style*="display: none"]') === null).map(t => t.textContent)""",
    )


def _kernel_int(page, code: str) -> int:
    out = H.kernel_eval(page, code)
    assert out is not None and not out.startswith("ERROR"), out
    return int(out)


def test_short_bar_column_is_hit(panel_page):
    page, _ = panel_page
    cols = _columns(page)
    n = _kernel_int(page, "len(panel.summary)")
    assert len(cols) == n and cols[0]["marks"] == 2
    # the shortest site with a positive contribution, other than the current selection
    i = _kernel_int(page, "int(np.argmin(np.where(totals > 0, totals, np.inf)))")
    col = cols[i]
    tallest = max(c["shown"] for c in cols)
    print(f"\n[layers] site {i}: bar {col['shown']:.1f} px of {tallest:.1f} px; column {col}")
    assert col["shown"] < 3, "expected a bar a person can hardly hit"
    assert col["height"] >= 0.9 * tallest  # its column spans the chart's height
    # click high in the column, far above the bar itself
    page.mouse.click(col["x"] + col["width"] / 2, col["y"] + 0.2 * col["height"])
    page.wait_for_function(
        f"() => document.querySelector('{DETAILS}').innerText.includes('(site {i},')",
        timeout=30_000,
    )
    assert _kernel_int(page, "panel.selected_site") == i
    label = H.kernel_eval(page, f"panel.summary[{i}].label").strip("'\"")
    assert label in page.inner_text(DETAILS)
    assert label in page.inner_text(CHANNELS)  # the channel chart's title


def _hover_tooltip(page, col: dict) -> str:
    """Move the mouse over a column the way a person does; the shown tooltip's text."""
    x, y = col["x"] + col["width"] / 2, col["y"] + 0.5 * col["height"]
    for k in range(4):
        page.mouse.move(x + k, y + k)
        page.wait_for_timeout(100)
    handle = page.wait_for_function(
        """() => [...document.querySelectorAll('.bqplot_mark_tooltip')]
            .filter(e => Number(getComputedStyle(e).opacity) > 0.5)
            .map(e => e.innerText).join(' ') || false""",
        timeout=15_000,
    )
    return handle.json_value()


def test_hover_names_the_site(panel_page):
    page, _ = panel_page
    cols = _columns(page)
    j = 5
    label = H.kernel_eval(page, f"panel.summary[{j}].label").strip("'\"")
    path = H.kernel_eval(page, f"panel.summary[{j}].name").strip("'\"")
    text = _hover_tooltip(page, cols[j])
    assert label in text and path in text, text
    page.mouse.move(5, 5)


def test_log_scale_view_is_hit_and_hovered(panel_page):
    page, errors = panel_page
    page.click(f"{PANEL} .critpath-log-toggle")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{CHART} .axis .tick text')]"
        ".some(t => t.textContent === '1k')",
        timeout=30_000,
    )
    page.wait_for_timeout(1000)
    assert H.kernel_eval(page, "panel.log_scale") == "True"
    cols = _columns(page)
    shown = [c["shown"] for c in cols]
    # on the log axis the smallest site's bar is at least a tenth of the tallest
    assert min(s for s in shown if s > 0) > 0.1 * max(shown), shown
    j = 9
    label = H.kernel_eval(page, f"panel.summary[{j}].label").strip("'\"")
    assert label in _hover_tooltip(page, cols[j])
    page.mouse.click(cols[j]["x"] + cols[j]["width"] / 2, cols[j]["y"] + 5)
    page.wait_for_function(
        f"() => document.querySelector('{DETAILS}').innerText.includes('(site {j},')",
        timeout=30_000,
    )
    page.mouse.move(5, 5)
    page.wait_for_timeout(1500)  # the site's map painted
    H.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(PANEL).screenshot(path=str(H.ARTIFACTS / "layer-panel-log.png"))
    nan = [e for e in errors.console_errors if "NaN" in e]
    assert not nan, nan


def test_click_outside_the_columns_keeps_the_selection(panel_page):
    page, _ = panel_page
    i = _kernel_int(page, "panel.selected_site")
    assert i >= 0
    before = page.inner_text(DETAILS)
    # the chart's background: what bqplot deselects on (the columns cover the plot
    # area, so a click between them in the browser lands here only where none is)
    page.evaluate(
        """(sel) => { const bg = document.querySelector(sel + ' svg .plotarea_background');
            bg.dispatchEvent(new MouseEvent('click', {bubbles: true})); }""",
        CHART,
    )
    # and a click in the title margin
    box = page.locator(CHART).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + 8)
    page.wait_for_timeout(1500)
    assert _kernel_int(page, "panel.selected_site") == i
    assert page.inner_text(DETAILS) == before
    assert _visible_ticks(page)


def test_deselect_clears_caption_and_ticks(panel_page):
    page, errors = panel_page
    i = _kernel_int(page, "panel.selected_site")
    label = H.kernel_eval(page, f"panel.summary[{i}].label").strip("'\"")
    H.kernel_eval(page, "panel.selected_site = -1")
    page.wait_for_function(
        f"() => !document.querySelector('{DETAILS}').innerText.includes('(site ')",
        timeout=30_000,
    )
    page.wait_for_timeout(1000)
    ticks = _visible_ticks(page)
    assert ticks == [], f"stale ticks on the empty channel chart: {ticks}"
    for part in (DETAILS, CHANNELS, f"{PANEL} .critpath-site-overlay"):
        assert label not in page.inner_text(part), f"{part} still names the deselected site"
    assert "no site selected" in page.inner_text(f"{PANEL} .critpath-site-overlay")
    assert not errors.page_errors, errors.page_errors
