"""End to end: the explorer's "What does a channel respond to" section in JupyterLab.

The user clicks the collapsed section's header; the kernel computes, in the background,
the selected site's top channel's activation map and its top-activating gallery
patches: the overlay is painted over the photo and six thumbnails (PNG images with
their captions) appear. Run with ``python -m pytest tests/browser/test_channel_gallery.py
-q -s`` (see README.md here).
"""

from __future__ import annotations

import harness as H
import pytest

pytestmark = pytest.mark.browser

SECTION = ".critpath-gallery-section"
HEADER = f"{SECTION} .jupyter-widget-Collapse-header"
MAP = f"{SECTION} .critpath-gallery-map"
THUMB_IMG = f"{SECTION} .critpath-gallery-thumb img"


def test_opening_the_section_paints_the_map_and_six_thumbnails(explorer):
    page = explorer.page
    assert page.locator(THUMB_IMG).count() == 0  # collapsed: nothing computed
    page.locator(HEADER).first.click()
    page.wait_for_function(
        """(sel) => { const imgs = [...document.querySelectorAll(sel)];
            return imgs.length === 6 && imgs.every(
                (i) => i.getAttribute('src') && i.complete && i.naturalWidth > 0); }""",
        arg=THUMB_IMG,
        timeout=120_000,
    )
    stats = H.wait_painted(page, MAP, timeout_ms=60_000)
    assert H.is_painted(stats), stats
    text = page.locator(SECTION).first.inner_text()
    assert "Channel" in text and "gallery patches" in text, text
    # what the kernel holds agrees with what is painted: six patches of that channel
    got = H.kernel_eval(
        page, "(len(explorer.gallery.patches), explorer.gallery.last_error is None)"
    )
    assert got == "(6, True)", got
    assert not H.notebook_error_outputs(page)
    shot = H.ARTIFACTS / "channel-gallery.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    section = page.locator(SECTION).first
    height = section.evaluate("e => e.getBoundingClientRect().height")
    width = (page.viewport_size or {}).get("width", 1400)
    page.set_viewport_size({"width": width, "height": int(height) + 900})
    section.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    section.screenshot(path=str(shot), timeout=10_000)
    print(f"\n[e2e] channel gallery screenshot: {shot}; text: {text!r}")
