"""DGR's cost: one explanation by the pruning objective against one plain gradient.

    python benchmarks/bench_dgr.py                  # the default steps (100)
    python benchmarks/bench_dgr.py --steps 20 --repeats 3

On the default model (efficientnet_lite0) and the "coffee" sample photo it prints the
median time of ``explain(method="dgr")`` (sparsity 0.7) over the median time of the
plain input gradient, measured in alternation in one run, the time per DGR step, the
share of gates at 0 and the loss at the first and the last step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import critpath_widgets as cw  # noqa: E402
from critpath_widgets import PathwayExplainer  # noqa: E402
from critpath_widgets.engine.scorers import METHOD_OPTIONS  # noqa: E402


def main() -> None:
    """Print one line: DGR time / plain gradient time on the default model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=METHOD_OPTIONS["dgr"]["steps"])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    b = cw.load_model()
    x = b.preprocess(cw.sample_image("coffee"))[None]
    ex = PathwayExplainer(b.model)

    def grad() -> None:
        ex.gradient(x)

    out = {}

    def dgr() -> None:
        out["e"] = ex.explain(x, method="dgr", sparsity=0.7, steps=a.steps)

    times: dict[str, list[float]] = {"grad": [], "dgr": []}
    grad()  # warm-up (builds the folded twin)
    for _ in range(a.repeats):
        for k, f in (("grad", grad), ("dgr", dgr)):
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    t_dgr, t_grad = statistics.median(times["dgr"]), statistics.median(times["grad"])
    print(
        f"dgr ({a.steps} steps): {t_dgr:.2f} s, plain gradient {t_grad * 1e3:.0f} ms, "
        f"ratio {t_dgr / t_grad:.0f}x ({t_dgr / a.steps * 1e3:.0f} ms per step; "
        f"{torch.get_num_threads()} threads, median of {a.repeats})"
    )
    gates = torch.cat([s.flatten() for s in out["e"].scores])
    losses = ex.scorer("dgr").losses
    print(
        f"gates at 0: {float((gates == 0).double().mean()):.4f}, "
        f"loss {losses[0]:.4g} -> {losses[-1]:.4g}"
    )


if __name__ == "__main__":
    main()
