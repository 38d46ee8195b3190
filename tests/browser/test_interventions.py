"""Interventions in JupyterLab, driven in a real Chromium: a click on a bar of the channel
chart removes that channel, the pathway map repaints and the restricted network's top-5
and the target's probability change; Reset restores the previous view exactly (the same
canvas hash). A screenshot with the intervention active goes to
``test-artifacts/interventions.png``.

Run with ``python -m pytest tests/browser/test_interventions.py -q -s``.
"""

from __future__ import annotations

import json

import harness as H
import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = "interventions.ipynb"
SETUP = """\
from critpath_widgets import PathwayExplorer

explorer = PathwayExplorer()  # EfficientNet-Lite0 on the "coffee" photo
explorer"""
CHANNELS = f"{H.EXPLORER} .critpath-channel-chart"
CANVAS = f"{H.PATHWAY_OVERLAY} {H.OVERLAY_CANVAS}"
RESTRICTED = f"{H.EXPLORER} .critpath-top5-restricted"
RESET = f"{H.EXPLORER} .critpath-interventions-reset"

#: the channel chart's hit bars (its last mark): one rect per rank
HITS_JS = """(sel) => {
    const root = document.querySelector(sel);
    const marks = [...new Set([...root.querySelectorAll('.bargroup')]
        .map(g => g.parentElement))];
    const last = marks[marks.length - 1];
    return [...last.querySelectorAll(':scope > .bargroup')].map(g => {
        const b = g.querySelector('rect').getBoundingClientRect();
        return {x: b.x, y: b.y, width: b.width, height: b.height, marks: marks.length}; });
}"""


#: per mark of the channel chart, the first bar's rect: height, fill, opacity
FIRST_BARS_JS = """(sel) => {
    const root = document.querySelector(sel);
    const marks = [...new Set([...root.querySelectorAll('.bargroup')]
        .map(g => g.parentElement))];
    return marks.map(m => { const r = m.querySelector(':scope > .bargroup rect');
        const cs = getComputedStyle(r);
        return {height: r.getBoundingClientRect().height, fill: cs.fill,
                opacity: cs.opacity, markOpacity: getComputedStyle(m).opacity}; });
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


def _kernel(page, code: str) -> str:
    out = H.kernel_eval(page, code, timeout_ms=120_000)
    assert out is not None and not out.startswith("ERROR"), out
    return out


def _counts(page) -> tuple[int, int]:
    """How many channels of the selected site are dropped and kept (after the worker)."""
    site = "explorer.explanation.site_names[explorer.layers.selected_site]"
    out = _kernel(
        page,
        f"explorer.wait(60) and tuple(len(explorer.interventions[a].get({site}, [])) "
        "for a in ('drop', 'keep'))",
    )
    return tuple(int(v) for v in out.strip("()").split(",") if v.strip())


def test_click_a_channel_then_reset(browser, jupyter, notebook_root):
    root, _ = notebook_root
    _write_notebook(root)
    page = browser.new_page()
    errors = H.PageErrors().attach(page)
    try:
        H.open_explorer(page, jupyter, NOTEBOOK)
        # the last site: its channels feed the classifier, so a knock-out shows in the top-5
        _kernel(page, "explorer.wait(120)")
        last = "len(explorer.explanation.site_names) - 1"
        _kernel(page, f"explorer.layers.selected_site = {last}\nexplorer.layers.selected_site")
        page.wait_for_function(
            f"() => document.querySelectorAll('{CHANNELS} svg .bargroup').length > 20",
            timeout=120_000,
        )
        page.wait_for_selector(f"{RESTRICTED} li", timeout=60_000)
        page.wait_for_timeout(1000)  # let the bars' transitions end
        before = H.canvas_stats(page, CANVAS)
        top_before = page.inner_text(RESTRICTED)
        page.locator(CHANNELS).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        hits = page.evaluate(HITS_JS, CHANNELS)
        assert hits and hits[0]["marks"] == 4  # bars, removed, forced in, hit bars
        first = hits[0]
        # click high in the column of the largest channel (its bar need not reach there)
        page.mouse.click(first["x"] + first["width"] / 2, first["y"] + 0.3 * first["height"])
        after = H.wait_canvas_change(page, CANVAS, before["hash"], timeout_ms=60_000)
        H.wait_message_contains(page, "Overridden")
        page.wait_for_function(
            "([sel, old]) => document.querySelector(sel).innerText !== old",
            arg=[RESTRICTED, top_before],
            timeout=30_000,
        )
        page.wait_for_timeout(1000)  # the state mark's transition
        first_bars = page.evaluate(FIRST_BARS_JS, CHANNELS)
        print(f"\n[interventions] first bar per mark: {first_bars}")
        removed = first_bars[1]
        assert removed["height"] > 0.5 * first["height"], removed  # the removed column
        spec = _kernel(page, "explorer.interventions")
        assert "'drop': {'" in spec and "'keep': {}" in spec, spec
        message = H.message_text(page)
        assert "→" in message, message
        print(f"\n[interventions] {spec}; {message[-160:]}")
        assert after["hash"] != before["hash"]

        # a second channel clicked twice: removed, then forced in (the screenshot shows
        # both states); each click waits for the kernel to have taken the previous one
        third = hits[3]
        for want in ((2, 0), (1, 1)):  # (dropped, kept) channels after each click
            page.mouse.click(third["x"] + third["width"] / 2, third["y"] + 0.3 * third["height"])
            for _ in range(100):
                if _counts(page) == want:
                    break
                page.wait_for_timeout(100)
            assert _counts(page) == want
        spec = _kernel(page, "explorer.interventions")
        assert "'keep': {'" in spec, spec
        page.wait_for_timeout(1000)  # the marks' transitions
        H.save_explorer_screenshot(page, H.ARTIFACTS / "interventions.png")
        after = H.canvas_stats(page, CANVAS)

        page.click(RESET)
        restored = H.wait_canvas_change(page, CANVAS, after["hash"], timeout_ms=60_000)
        page.wait_for_timeout(500)
        restored = H.canvas_stats(page, CANVAS)
        assert restored["hash"] == before["hash"], "Reset did not restore the previous map"
        assert page.inner_text(RESTRICTED) == top_before
        assert _kernel(page, "explorer.interventions") == "{'drop': {}, 'keep': {}}"
        assert "Overridden" not in H.message_text(page)
        assert not errors.page_errors, errors.page_errors
    finally:
        page.close()
