"""In-page probes of scrubbing (the pathway overlay's stack previews), shared by
tests/browser/test_scrub.py and benchmarks/bench_browser_latency.py --scrub."""

from __future__ import annotations

import harness as H

from critpath_widgets.widgets.stack_codec import SCRUB_LEVELS

#: logs every repaint of the pathway overlay with whether it painted a stack level
INSTALL_SCRUB_LOG_JS = """(sel) => {
    const el = document.querySelector(sel);
    const root = el.matches('[data-paint-count]') ? el : el.querySelector('[data-paint-count]');
    window.__scrubPaints = [];
    if (window.__scrubObserver) window.__scrubObserver.disconnect();
    const obs = new MutationObserver(() => {
        const n = Number(root.dataset.paintCount);
        const log = window.__scrubPaints;
        if (!log.length || log[log.length - 1].count !== n)
            log.push({t: performance.now(), count: n, key: root.dataset.paintKey,
                      preview: root.dataset.preview || ''});
    });
    obs.observe(root, {attributes: true, attributeFilter: ['data-paint-count']});
    window.__scrubObserver = obs;
    const readout = document.querySelector('.critpath-sparsity .widget-readout');
    window.__scrubInputs = [];
    if (readout && !window.__scrubInputHook) {
        readout.addEventListener('keydown', (ev) => {
            if (ev.key === 'Enter') window.__scrubInputs.push(performance.now());
        }, true);
        window.__scrubInputHook = true;
    }
}"""


def install_scrub_log(page) -> None:
    """Start logging the pathway overlay's paints (time, key, painted stack level)."""
    page.evaluate(INSTALL_SCRUB_LOG_JS, H.PATHWAY_OVERLAY)


def scrub_log(page) -> dict:
    """``{"paints": [{t, count, key, preview}], "inputs": [t of each readout Enter]}``."""
    return page.evaluate(
        "() => ({paints: window.__scrubPaints || [], inputs: window.__scrubInputs || []})"
    )


def stack_levels(page) -> int:
    """How many stack levels the pathway overlay holds in the browser."""
    return int(
        page.evaluate(
            """(sel) => { const el = document.querySelector(sel);
            const r = el && (el.matches('[data-stack-levels]') ? el
                : el.querySelector('[data-stack-levels]'));
            return r ? Number(r.dataset.stackLevels) : 0; }""",
            H.PATHWAY_OVERLAY,
        )
    )


def wait_stack(page, levels: int = len(SCRUB_LEVELS), timeout_ms: float = 180_000) -> None:
    """Wait until the browser holds the whole stack."""
    page.wait_for_function(
        """([sel, k]) => { const el = document.querySelector(sel);
            const r = el && (el.matches('[data-stack-levels]') ? el
                : el.querySelector('[data-stack-levels]'));
            return !!r && Number(r.dataset.stackLevels) === k; }""",
        arg=[H.PATHWAY_OVERLAY, levels],
        timeout=timeout_ms,
        polling=100,
    )


def hold_kernel_worker(page, seconds: float) -> str | None:
    """Keep the explorer's worker from computing for ``seconds`` (a kernel thread holds its
    compute lock), so that only the browser can answer a slider move meanwhile."""
    return H.kernel_eval(
        page,
        "import threading as _t, time as _tm\n"
        "_held = _t.Event()\n"
        "def _hold(lk=explorer._session.compute_lock):\n"
        "    with lk:\n"
        f"        _held.set(); _tm.sleep({float(seconds)!r})\n"
        "_t.Thread(target=_hold, daemon=True).start()\n"
        "_held.wait(10)",
    )
