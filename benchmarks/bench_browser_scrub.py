"""Browser latency of scrubbing: slider step -> repaint of the pathway overlay from the stack.

Opens ``notebooks/e2e_explorer.ipynb`` in JupyterLab in headless Debian Chromium (the
harness of ``tests/browser/``), waits until the whole stack of pathway maps is in the
browser (``data-stack-levels``), then sets the sparsity slider ``--n`` times (readout +
Enter) and measures in the page with ``performance.now()``: from the Enter keydown
(capture phase) to the overlay's paint of a stack level (``data-preview`` set: the
slider -> overlay ``jslink``, decode of the level, colouring, canvas), and to the paint
of the exact map the kernel sends afterwards. Also the bytes of the stack.

    .venv/bin/python benchmarks/bench_browser_scrub.py [--n 12] [--json out.json]

Target (issue 17): median slider step -> repaint from the stack <= 16 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))

import harness as H  # noqa: E402
import scrub_probe as P  # noqa: E402

VALUES = [0.33, 0.62, 0.87, 0.41, 0.96, 0.18, 0.53, 0.74, 0.27, 0.91, 0.46, 0.08]


def one_step(page, v: float) -> dict:
    """Set the slider to ``v``; times of the stack paint and of the exact paint."""
    n_in = len(P.scrub_log(page)["inputs"])
    n_paint = len(P.scrub_log(page)["paints"])
    H.set_slider_by_readout(page, v)
    H.wait_message_contains(page, f"sparsity {v:.2f}", timeout_ms=60_000)
    page.wait_for_function(
        """(sel) => { const el = document.querySelector(sel);
            const r = el.querySelector('[data-paint-count]') || el;
            return r.dataset.preview === ''; }""",
        arg=H.PATHWAY_OVERLAY,
        timeout=30_000,
    )
    page.wait_for_timeout(300)
    log = P.scrub_log(page)
    t0 = log["inputs"][n_in]
    paints = [p for p in log["paints"][n_paint:] if p["t"] >= t0]
    preview = next((p for p in paints if p["preview"]), None)
    exact = [p for p in paints if not p["preview"]]
    return {
        "sparsity": v,
        "level": float(preview["preview"]) if preview else None,
        "stack_paint_ms": preview["t"] - t0 if preview else float("nan"),
        "exact_paint_ms": exact[-1]["t"] - t0 if exact else float("nan"),
        "paints": len(paints),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12, help="slider steps to time (max 12)")
    ap.add_argument("--target-ms", type=float, default=16.0)
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    with H.explorer_session() as s:
        page = s.page
        P.wait_stack(page)
        ready = time.perf_counter() - t0
        H.kernel_eval(page, "explorer.wait(120)")
        nbytes = int(H.kernel_eval(page, "len(explorer.pathway_overlay.stack)"))
        P.install_scrub_log(page)
        steps = []
        for v in VALUES[: args.n]:
            r = one_step(page, v)
            steps.append(r)
            print(
                f"  sparsity -> {v:.2f}: stack level {r['level']} painted after "
                f"{r['stack_paint_ms']:.1f} ms, exact map after {r['exact_paint_ms']:.1f} ms"
            )
        errors = list(s.errors.page_errors)
    stack_ms = [r["stack_paint_ms"] for r in steps]
    exact_ms = [r["exact_paint_ms"] for r in steps]
    out = {
        "stack_in_browser_s_after_open": ready,
        "bytes_per_stack": nbytes,
        "stack_paint_median_ms": statistics.median(stack_ms),
        "stack_paint_max_ms": max(stack_ms),
        "exact_paint_median_ms": statistics.median(exact_ms),
        "steps": steps,
        "page_errors": errors,
        "target_ms": args.target_ms,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if out["stack_paint_median_ms"] <= args.target_ms else 1


if __name__ == "__main__":
    raise SystemExit(main())
