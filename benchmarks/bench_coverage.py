"""The coverage table: every torchvision classification family, in the zoo's own
configuration (random weights, one 224x224 image; 299 for Inception v3), explained with
the default sites.

    python benchmarks/bench_coverage.py                 # all families
    python benchmarks/bench_coverage.py --families ViT Swin --repeats 5

Per family it prints the sites found (and the count an fx trace of the model lists),
the neurons on them, the activation kinds, and the median time of a NeuronMCT
explanation (sparsity 0.7) over the median time of the plain input gradient of the same
model, measured in alternation in one run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from critpath_widgets import PathwayExplainer, SiteWarning  # noqa: E402
from tests.coverage_models import FAMILIES, build, fx_site_count  # noqa: E402


def _ratio(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float, object]:
    """Median explanation time, median plain-gradient time (same rounds), and the last
    explanation."""
    ex = PathwayExplainer(model)
    plain = copy.deepcopy(model)

    def grad() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(plain(xg).max(1).values.sum(), xg)

    out = {}

    def explain() -> None:
        out["e"] = ex.explain(x, sparsity=0.7)

    times: dict[str, list[float]] = {"grad": [], "explain": []}
    grad(), explain()  # warm-up (the first explanation builds the folded twin)
    for _ in range(repeats):
        for k, f in (("grad", grad), ("explain", explain)):
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return statistics.median(times["explain"]), statistics.median(times["grad"]), out["e"]


def main() -> None:
    """Print the coverage table (markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="*", help="family names (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    chosen = [f for f in FAMILIES if not args.families or f.name in args.families]
    print("| model | sites (fx count) | neurons | activations | explain / gradient |")
    print("|---|---|---|---|---|")
    for family in chosen:
        model, x = build(family, full=True)
        count, _ = fx_site_count(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SiteWarning)
            t_exp, t_grad, e = _ratio(model, x, args.repeats)
        kinds: dict[str, int] = {}
        for k in e.site_kinds:
            kinds[k] = kinds.get(k, 0) + 1
        acts = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        member = getattr(family.full, "__name__", "")
        member = member if member.isidentifier() else type(model).__name__.lower()
        print(
            f"| {family.name} ({member}, {x.shape[-1]}px) | "
            f"{len(e.site_names)} ({count}) | {e.pathway.neurons:,} | {acts} | "
            f"{t_exp / t_grad:.2f} ({t_exp * 1e3:.0f} / {t_grad * 1e3:.0f} ms) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
