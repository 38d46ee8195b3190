"""What keeping the folded twin equal to the model costs on every call.

    python benchmarks/bench_fold.py                      # efficientnet_lite0, resnet50
    python benchmarks/bench_fold.py --models resnet50 --repeats 15

Per model (224x224, batch 1): the median time of the per-call work that keeps the twin
equal to the model, comparing every module the twin copies with the model's and
comparing every folded pair's live tensors in full with those of its last fold (no
value changes here, so nothing is refolded), against the plain gradient.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_ms(f, repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def run(name: str, repeats: int) -> str:
    import torch

    import critpath_widgets as cw

    torch.manual_seed(0)
    b = cw.load_model(name, weights=None if name == "efficientnet_lite0" else "random")
    model = b.model
    x = b.preprocess(cw.sample_image("coffee"))[None]
    ex = cw.PathwayExplainer(model)
    target = int(ex.predict(x).argmax())
    folding = ex._folding

    def gradient() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xg)[0, target], xg)

    def per_call() -> None:
        folding.net(x)  # the module check, then the tensor comparison of every pair

    g = _median_ms(gradient, repeats)
    check = _median_ms(folding._stale, repeats * 5)
    call = _median_ms(per_call, repeats * 5)
    return f"| {name} | {folding.pairs} | {g:.1f} | {check:.2f} | {call:.2f} | {call / g:.3f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    print("| model | folded pairs | gradient ms | module check ms | modules + tensors ms "
          "| modules + tensors / gradient |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for m in a.models:
        print(run(m, a.repeats), flush=True)


if __name__ == "__main__":
    main()
