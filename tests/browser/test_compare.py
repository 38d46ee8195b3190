"""End to end: the explorer's "Compare methods" section in JupyterLab, in a real Chromium.

The user clicks the collapsed section's header; the panel computes in the kernel and
paints one small overlay per chosen method, each captioned with the target logit of
its pathway next to the full network's (the random pathway's collapses). Run with
``python -m pytest tests/browser/test_compare.py -q -s`` (see README.md here).
"""

from __future__ import annotations

import re

import harness as H
import pytest

pytestmark = pytest.mark.browser

SECTION = ".critpath-compare-section"
HEADER = f"{SECTION} .jupyter-widget-Collapse-header"
CELL_OVERLAY = f"{SECTION} .critpath-compare-overlay"
METHODS = ("pathway_mct", "pathway_random", "gradient", "gradcam")
LOGITS = re.compile(r"target logit (-?[\d.]+) through the pathway, (-?[\d.]+) full network")


def test_opening_the_section_paints_one_overlay_per_method(explorer):
    page = explorer.page
    # the fast methods (NeuronIntGrad, seconds per step on two cores, is checked in
    # tests/test_compare_panel.py); chosen in the kernel before the section opens
    got = H.kernel_eval(page, f"explorer.comparison.methods.value = {METHODS!r}; 'ok'")
    assert got == "'ok'", got
    assert page.locator(CELL_OVERLAY).count() == 0  # collapsed: nothing computed
    page.locator(HEADER).first.click()
    page.wait_for_function(
        """([sel, n]) => document.querySelectorAll(sel).length === n""",
        arg=[f"{CELL_OVERLAY} {H.OVERLAY_CANVAS}", len(METHODS)],
        timeout=60_000,
    )
    # every caption filled in: every map has arrived (blank photos until then)
    page.wait_for_function(
        """(sel) => !document.querySelector(sel).innerText.includes('computing')""",
        arg=f"{SECTION} .critpath-compare-grid",
        timeout=180_000,
    )
    page.wait_for_timeout(500)  # the last map's repaint
    stats = []
    for i in range(len(METHODS)):
        cell = f"{SECTION} .critpath-compare-grid > :nth-child({i + 1})"
        stats.append(H.wait_painted(page, cell, timeout_ms=180_000))
    assert all(H.is_painted(s) for s in stats), stats
    assert len({s["hash"] for s in stats}) == len(METHODS), "two methods painted alike"
    captions = page.locator(f"{SECTION} .critpath-compare-grid").first.inner_text()
    found = LOGITS.findall(captions)
    assert len(found) == 2, captions  # the two pathway methods
    (mct, full), (rnd, full2) = ((float(a), float(b)) for a, b in found)
    assert full == full2 and rnd < 0.25 * mct, captions
    assert "full network, no pathway" in captions
    # the section fits the notebook column: the grid wraps, nothing sticks out
    widths = page.evaluate(
        """(sel) => { const g = document.querySelector(sel);
            return [g.scrollWidth, g.clientWidth]; }""",
        f"{SECTION} .critpath-compare-grid",
    )
    assert widths[0] <= widths[1] + 1, widths
    assert not H.notebook_error_outputs(page)
    shot = H.ARTIFACTS / "compare.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    section = page.locator(SECTION).first
    # the notebook panel scrolls: grow the viewport so that the whole section shows
    height = section.evaluate("e => e.getBoundingClientRect().height")
    width = (page.viewport_size or {}).get("width", 1400)
    page.set_viewport_size({"width": width, "height": int(height) + 900})
    section.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    section.screenshot(path=str(shot), timeout=10_000)
    print(f"\n[e2e] comparison screenshot: {shot}; captions: {captions!r}")
