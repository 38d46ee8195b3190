"""End to end: the PathwayExplorer in JupyterLab, driven in a real Chromium.

Run with ``python -m pytest tests/browser -q -s`` (needs ``apt-get install chromium`` and
the front-end bundle from ``npm install && npm run build``). The tests share one page
(module fixture ``explorer``) and run in file order: render, slider, colormap, errors.

The sparsity slider is set by typing into its editable readout + Enter, which gives an
exact value; ``test_sparsity_slider_drag`` also drags the noUiSlider handle with the
mouse, the way a person does, and only checks that the value moved and the overlay
repainted.
"""

from __future__ import annotations

import re

import harness as H
import pytest

pytestmark = pytest.mark.browser

ERROR_WORDS = re.compile(r"\berror\b|exception|traceback", re.IGNORECASE)
PATHWAY_CANVAS = f"{H.PATHWAY_OVERLAY} {H.OVERLAY_CANVAS}"
COLORMAP_SELECT = f"{H.PATHWAY_OVERLAY} select.critpath-overlay-colormap"


def _wait_chart_change(page, before: str, timeout_ms: float = 60_000) -> str:
    page.wait_for_function(
        """([sel, before]) => {
            const el = document.querySelector(sel);
            if (!el) return false;
            const rects = [...el.querySelectorAll('svg .bargroup rect, svg g.bar rect')];
            const use = rects.length ? rects : [...el.querySelectorAll('svg rect')];
            const sig = use.map(r => ['x', 'y', 'width', 'height']
                .map(a => r.getAttribute(a)).join(',')).join(';');
            return sig !== before;
        }""",
        arg=[H.LAYER_CHART, before],
        timeout=timeout_ms,
        polling=100,
    )
    return H.chart_signature(page)


def test_explorer_renders(explorer):
    page = explorer.page
    stats = H.canvas_stats(page, PATHWAY_CANVAS)
    assert H.is_painted(stats), f"pathway overlay canvas not painted: {stats}"
    grad = H.wait_painted(page, H.GRADIENT_OVERLAY, timeout_ms=60_000)
    assert H.is_painted(grad), f"gradient overlay canvas not painted: {grad}"
    page.wait_for_selector(f"{H.LAYER_CHART} svg rect", timeout=60_000)
    assert H.chart_signature(page), "layer chart has no bars"
    assert page.locator(f"{H.SPARSITY} .widget-readout").count() == 1


def test_sparsity_slider_repaints_overlay_and_chart(explorer):
    page = explorer.page
    # Let any repaint still in flight from the first explanation settle.
    page.wait_for_timeout(500)
    v0 = H.slider_value(page)
    target = 0.95 if abs(v0 - 0.95) > 0.02 else 0.7
    before = H.paint_state(page, H.PATHWAY_OVERLAY)
    pixels_before = H.canvas_stats(page, PATHWAY_CANVAS)
    chart_before = H.chart_signature(page)

    H.set_slider_by_readout(page, target)
    assert H.slider_value(page) == pytest.approx(target, abs=1e-6)
    after = H.wait_repaint(page, H.PATHWAY_OVERLAY, before, timeout_ms=60_000)
    assert after["key"] != before["key"]
    # The paint key may change before the final pixels (several repaints per update).
    page.wait_for_function(
        """([sel, h]) => { const c = document.querySelector(sel);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let x = 2166136261 >>> 0;
            for (let i = 0; i < d.length; i++) x = Math.imul(x ^ d[i], 16777619) >>> 0;
            return x.toString(16) !== h; }""",
        arg=[PATHWAY_CANVAS, pixels_before["hash"]],
        timeout=30_000,
    )
    assert H.is_painted(H.canvas_stats(page, PATHWAY_CANVAS))
    chart_after = _wait_chart_change(page, chart_before)
    assert chart_after and chart_after != chart_before
    # The summary in the message area names the sparsity now shown.
    H.wait_message_contains(page, f"sparsity {target:.2f}", timeout_ms=30_000)
    # ... and the Python trait followed the slider.
    assert float(H.kernel_eval(page, "explorer.sparsity")) == pytest.approx(target, abs=1e-6)
    print(f"\n[e2e] sparsity {v0} -> {target}: paint {before} -> {after}")


def test_sparsity_slider_drag(explorer):
    page = explorer.page
    v0 = H.slider_value(page)
    before = H.paint_state(page, H.PATHWAY_OVERLAY)
    H.drag_slider(page, 0.5 if v0 > 0.6 else 0.85)
    page.wait_for_function(
        """([sel, v0]) => { const r = document.querySelector(sel + ' .widget-readout');
            return r && Math.abs(parseFloat(r.innerText) - v0) > 1e-9; }""",
        arg=[H.SPARSITY, v0],
        timeout=10_000,
    )
    after = H.wait_repaint(page, H.PATHWAY_OVERLAY, before, timeout_ms=60_000)
    v1 = H.slider_value(page)
    H.wait_message_contains(page, f"sparsity {v1:.2f}", timeout_ms=30_000)
    print(f"\n[e2e] drag: sparsity {v0} -> {v1}, paint {before} -> {after}")


def test_colormap_select_repaints_without_kernel(explorer):
    page = explorer.page
    select = page.locator(COLORMAP_SELECT)
    assert select.count() == 1, "no colormap <select> in the pathway overlay"
    options = select.first.evaluate("s => [...s.options].map(o => o.value)")
    current = select.first.input_value()
    choices = [o for o in options if o != current]
    assert choices, f"only one colormap offered: {options}"
    new = "gray" if "gray" in choices else choices[0]

    pixels_before = H.canvas_stats(page, PATHWAY_CANVAS)
    before = H.paint_state(page, H.PATHWAY_OVERLAY)
    # Record paintCount in the capture phase and again after the <select>'s own handler
    # (bubble phase at the document): a change there means the repaint ran synchronously
    # inside the event dispatch, so no kernel round trip was involved.
    page.evaluate(
        """([sel, overlay]) => {
            const s = document.querySelector(sel);
            const root = document.querySelector(overlay);
            const host = root.matches('[data-paint-count]') ? root
                : root.querySelector('[data-paint-count]');
            window.__cmapProbe = {};
            document.addEventListener('change', (ev) => {
                if (ev.target !== s) return;
                window.__cmapProbe.t0 = performance.now();
                window.__cmapProbe.c0 = Number(host.dataset.paintCount);
            }, {capture: true, once: true});
            document.addEventListener('change', (ev) => {
                if (ev.target !== s) return;
                window.__cmapProbe.t1 = performance.now();
                window.__cmapProbe.c1 = Number(host.dataset.paintCount);
            }, {once: true});
        }""",
        [COLORMAP_SELECT, H.PATHWAY_OVERLAY],
    )
    select.first.select_option(new)
    after = H.wait_repaint(page, H.PATHWAY_OVERLAY, before, timeout_ms=5_000)
    probe = page.evaluate("() => window.__cmapProbe")
    pixels_after = H.canvas_stats(page, PATHWAY_CANVAS)
    ms = probe["t1"] - probe["t0"]
    print(f"\n[e2e] colormap {current} -> {new}: repaint in {ms:.1f} ms, probe {probe}")
    assert probe["c1"] > probe["c0"], f"no synchronous repaint on the colormap change: {probe}"
    assert ms < 100, f"colormap repaint took {ms:.1f} ms"
    assert after["key"] != before["key"]
    assert pixels_after["hash"] != pixels_before["hash"], "canvas pixels did not change"
    assert H.is_painted(pixels_after)
    # The browser-side choice is then saved to the Python trait (after the repaint).
    synced = H.kernel_eval(page, "explorer.pathway_overlay.colormap")
    assert synced == repr(new), f"colormap trait in the kernel: {synced}, expected {new!r}"


def test_method_switch_to_gradcam_and_back(explorer):
    page = explorer.page
    select = f"{H.METHOD} select"
    assert page.locator(select).count() == 1, "no method <select> in the explorer"
    before = H.paint_state(page, H.PATHWAY_OVERLAY)
    page.select_option(select, label="Grad-CAM (baseline)")
    H.wait_message_contains(page, "Grad-CAM (baseline)", timeout_ms=60_000)
    after = H.wait_repaint(page, H.PATHWAY_OVERLAY, before, timeout_ms=60_000)
    assert H.is_painted(H.canvas_stats(page, PATHWAY_CANVAS))
    assert H.kernel_eval(page, "explorer.method") == repr("gradcam")
    # a baseline has no pathway: the sparsity slider is off, the layer panel says so
    assert H.kernel_eval(page, "explorer.sparsity_slider.disabled") == "True"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.critpath-layer-details')]"
        ".some(e => e.innerText.includes('no pathway'))",
        timeout=30_000,
    )
    page.select_option(select, label="NeuronMCT (Taylor)")
    H.wait_message_contains(page, "NeuronMCT (Taylor), global scope", timeout_ms=60_000)
    back = H.wait_repaint(page, H.PATHWAY_OVERLAY, after, timeout_ms=60_000)
    assert H.kernel_eval(page, "explorer.sparsity_slider.disabled") == "False"
    print(f"\n[e2e] method: paint {before} -> {after} (Grad-CAM) -> {back}")


def test_no_errors(explorer):
    page = explorer.page
    assert not explorer.errors.page_errors, f"JS errors on the page: {explorer.errors.page_errors}"
    assert not H.notebook_error_outputs(page), H.notebook_error_outputs(page)
    msg = H.message_text(page)
    # The explorer tags its messages with data-kind = info | busy | warning | error.
    kinds = page.eval_on_selector_all(
        f"{H.MESSAGE} [data-kind]", "els => els.map(e => e.dataset.kind)"
    )
    assert "error" not in kinds, f"explorer message area shows an error: {msg!r}"
    assert not ERROR_WORDS.search(msg), f"explorer message area shows an error: {msg!r}"
    print(f"\n[e2e] message area: {msg!r}")
    overlay_msgs = page.eval_on_selector_all(
        f"{H.EXPLORER} .critpath-overlay-message", "els => els.map(e => e.innerText)"
    )
    assert not any(ERROR_WORDS.search(m) for m in overlay_msgs), overlay_msgs
    if explorer.errors.console_errors:
        print(f"\n[e2e] console errors (not fatal): {explorer.errors.console_errors}")
