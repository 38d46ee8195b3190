"""What the evaluation costs on the default model (EfficientNet-Lite0, the coffee image).

    python benchmarks/bench_evaluation.py                    # deletion and full sanity check
    python benchmarks/bench_evaluation.py --repeats 7 --layers 10

1. A deletion curve with 20 steps (21 images in one batched forward) against one
   no-grad forward over a batch of 20 images, median times measured in alternation:
   the curve should cost little more than that forward (target <= 1.5x).
2. A sanity check over every parameterised module (or the top ``--layers``) for three
   methods (plain gradient, NeuronMCT pathway gradient, gradient x input): total time,
   and the forward and backward passes spent, counted by a hook on the classifier
   (which the deep copy inherits), against the minimum: one probe forward, then per
   step one forward+backward per gradient method and two for the pathway gradient.
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
from critpath_widgets import evaluation as ev  # noqa: E402
from critpath_widgets.engine import PathwayExplainer  # noqa: E402


def bench_deletion(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    """Median deletion-curve time over median batch-20 forward time."""
    sal = PathwayExplainer(model).explain(x).saliency
    batch = x.repeat(20, 1, 1, 1)

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    def curve() -> None:
        ev.deletion(model, x, sal, steps=20)

    curve(), forward()  # warm-up
    times: dict[str, list[float]] = {"curve": [], "forward": []}
    for _ in range(repeats):
        for k, f in (("curve", curve), ("forward", forward)):
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    c, f = statistics.median(times["curve"]), statistics.median(times["forward"])
    print(f"deletion, 20 steps: {c * 1e3:.0f} ms; one forward of 20 images: {f * 1e3:.0f} ms;")
    print(
        f"  ratio {c / f:.2f} (target <= 1.5); all curve times (ms): "
        f"{[round(v * 1e3) for v in times['curve']]}"
    )


def bench_sanity(model: torch.nn.Module, x: torch.Tensor, layers: int | None) -> None:
    """Time and passes of a cascading randomisation for three methods."""
    counts = {"forward": 0, "backward": 0}

    def count_backward(g: torch.Tensor) -> None:
        counts["backward"] += 1

    def count(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        counts["forward"] += 1
        if out.requires_grad:
            out.register_hook(count_backward)

    explainers: dict[int, PathwayExplainer] = {}  # one per model: a new one folds anew

    def grad_x_input(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ex = explainers.setdefault(id(m), PathwayExplainer(m))
        return ex.gradient(x, t) * x

    order, _ = ev.parameter_groups(model, x)  # (one forward, before the count starts)
    head = dict(model.named_modules())[order[-1]]  # the logits' layer, called once a pass
    handle = head.register_forward_hook(count)  # the deep copy inherits it
    try:
        t = time.perf_counter()
        methods = {"gradient": "gradient", "pathway_mct": "pathway_mct", "gxi": grad_x_input}
        r = ev.sanity_check(model, x, methods, layers=layers)
        total = time.perf_counter() - t
    finally:
        handle.remove()
    steps = len(r.steps)
    fb = steps * (1 + 2 + 1)  # forward+backward pairs per step: gradient, pathway, gxi
    print(
        f"sanity check: {steps - 1} randomisation steps (+ the original), 3 methods, "
        f"4 metrics: {total:.1f} s ({total / steps:.2f} s a step)"
    )
    print(
        f"  forward passes {counts['forward']} (minimum {fb + 1}: a probe + {fb}), "
        f"backward passes {counts['backward']} (minimum {fb})"
    )
    for m in r.methods:
        s = r.similarity[m]
        print(
            f"  {m:12s} spearman_abs first/last randomised step: "
            f"{s['spearman_abs'][1]:.2f} / {s['spearman_abs'][-1]:.2f}; "
            f"ssim {s['ssim'][-1]:.2f}, hog {s['hog'][-1]:.2f} at the end"
        )


def main() -> None:
    """Run both benchmarks on the default model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=None, help="stop the cascade early")
    ap.add_argument("--skip-sanity", action="store_true")
    args = ap.parse_args()
    b = cw.load_model()
    x = b.preprocess(cw.sample_image("coffee"))[None]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_deletion(b.model, x, args.repeats)
    if not args.skip_sanity:
        bench_sanity(b.model, x, args.layers)


if __name__ == "__main__":
    main()
