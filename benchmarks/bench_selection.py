"""Pathway selection alone, as a share of the plain gradient, on one model's real scores.

(The gradient is ``explainer.gradient``, on the BatchNorm-folded twin the engine runs.)

    python benchmarks/bench_selection.py                       # efficientnet_lite0, batch 1
    python benchmarks/bench_selection.py --model resnet50 --batch 8

Scores NeuronMCT once on the ``coffee`` photo, then times in alternation: the plain input
gradient, and the selection of the pathway from those scores (``select``: exact top-k
over all sites, globally and per layer, at sparsities 0.3, 0.7 and 0.9) and, for
comparison, ``torch.topk`` over the same rows. Before each selection a 160 MB buffer is
written, so that the scores come from memory as they do after a score pass (they are
larger than the cache). Prints medians and the ratios to the gradient.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch

    import critpath_widgets as cw
    from critpath_widgets.engine.pathway.policy import keep_count, select

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()

    torch.manual_seed(0)
    b = cw.load_model(a.model, weights=None if a.model == "efficientnet_lite0" else "random")
    x = b.preprocess(cw.sample_image("coffee"))[None]
    x = torch.cat([x, x.flip(3), x.flip(2), x.roll(16, 3)] * 2)[: a.batch] if a.batch > 1 else x
    ex = cw.PathwayExplainer(b.model)
    e = ex.explain(x)
    flat, layout = e._flat_contrib, e._layout
    evict = torch.empty(40_000_000)

    def cold(f):
        def g():
            evict.add_(1.0)
            t = time.perf_counter()
            f()
            return time.perf_counter() - t

        return g

    def plain():
        t = time.perf_counter()
        ex.gradient(x)
        return time.perf_counter() - t

    cases = {"gradient": plain}
    for s in (0.3, 0.7, 0.9):
        cases[f"global {s}"] = cold(lambda s=s: select(flat, layout, s))
    cases["layer 0.7"] = cold(lambda: select(flat, layout, 0.7, scope="layer"))
    k = keep_count(layout.total, 0.7)
    cases["torch.topk 0.7"] = cold(lambda: torch.topk(flat, k, dim=1, sorted=False))
    times: dict[str, list[float]] = {n: [] for n in cases}
    for f in cases.values():
        f()
    for _ in range(a.repeats):
        for n, f in cases.items():
            times[n].append(f())
    g = statistics.median(times["gradient"])
    print(
        f"{a.model}, batch {a.batch}: {layout.total:,} neurons per sample, "
        f"{len(layout)} sites, {torch.get_num_threads()} threads"
    )
    for n, v in times.items():
        m = statistics.median(v)
        print(f"  {n:16s} {m * 1000:8.1f} ms   {m / g:5.3f} x the gradient")


if __name__ == "__main__":
    main()
