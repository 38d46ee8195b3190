"""Scrubbing in JupyterLab: once the stack of pathway maps has arrived, a slider move
repaints the pathway overlay from the nearest stack level in the browser, while the
kernel cannot answer; the exact map replaces it when the kernel does."""

from __future__ import annotations

import harness as H
import pytest
import scrub_probe as P

pytestmark = pytest.mark.browser


def test_slider_move_repaints_from_the_stack_before_the_kernel_answers(explorer):
    page = explorer.page
    P.wait_stack(page)
    assert H.kernel_eval(page, "explorer.pathway_overlay.stack_levels[-1]") == "0.99"
    H.kernel_eval(page, "explorer.wait(120)")
    start = H.slider_value(page)
    target = 0.6 if abs(start - 0.6) > 0.01 else 0.8  # both on the stack's grid
    P.install_scrub_log(page)
    assert P.hold_kernel_worker(page, 6.0) == "True"
    H.set_slider_by_readout(page, target)
    # the preview paint: the nearest level (the target itself), with the kernel held
    page.wait_for_function(
        """([sel, s]) => { const el = document.querySelector(sel);
            const r = el.querySelector('[data-paint-count]') || el;
            return r.dataset.preview === String(s); }""",
        arg=[H.PATHWAY_OVERLAY, target],
        timeout=5_000,
    )
    label = page.locator(f"{H.PATHWAY_OVERLAY} .critpath-overlay-colorbar-label").first
    assert f"≈ sparsity {target:.2f}" in label.inner_text()
    assert f"sparsity {target:.2f}" not in H.message_text(page)  # the kernel has not answered
    # then the kernel's exact map replaces it
    H.wait_message_contains(page, f"sparsity {target:.2f}", timeout_ms=60_000)
    page.wait_for_function(
        """(sel) => { const el = document.querySelector(sel);
            const r = el.querySelector('[data-paint-count]') || el;
            return r.dataset.preview === ''; }""",
        arg=H.PATHWAY_OVERLAY,
        timeout=30_000,
    )
    log = P.scrub_log(page)
    previews = [p for p in log["paints"] if p["preview"]]
    exact = [p for p in log["paints"] if not p["preview"]]
    assert previews and exact and previews[0]["t"] < exact[-1]["t"], log
    assert log["inputs"] and previews[0]["t"] - log["inputs"][0] < 1000, log
    assert "≈" not in label.inner_text()
    assert H.kernel_eval(page, "explorer.pathway_overlay.values_sparsity") == repr(target)
