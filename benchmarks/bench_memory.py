"""Paired end-to-end A/B of the engine's reused buffers (engine/memory.py) against plain
``torch.empty``, in one process, the two alternating round by round.

    python benchmarks/bench_memory.py                        # efficientnet_lite0, resnet50
    python benchmarks/bench_memory.py --models resnet50 --repeats 15

For each model (224x224, real weights for efficientnet_lite0, random ones for
torchvision models) it prints the median NeuronMCT explanation and ``at_sparsity`` time
with each allocator and their ratio (plain / reused: above 1 means the reuse pays), at
batch 1 and batch 8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _plain(shape, dtype, device="cpu"):
    import torch

    return torch.empty(shape, dtype=dtype, device=device)


def run(name: str, batch: int, repeats: int) -> str:
    import torch

    import critpath_widgets as cw
    from critpath_widgets.engine import memory

    allocators = {"reused": memory.empty, "plain": _plain}
    torch.manual_seed(0)
    b = cw.load_model(name, weights=None if name == "efficientnet_lite0" else "random")
    x = b.preprocess(cw.sample_image("coffee"))[None]
    x = torch.cat([x, x.flip(3), x.flip(2), x.roll(16, 3)] * 2)[:batch]
    ex = cw.PathwayExplainer(b.model)
    base = ex.explain(x, sparsity=0.7)
    base.at_sparsity(0.9)  # sorts the cached scores once
    times: dict[str, dict[str, list[float]]] = {
        k: {"explain": [], "at_sparsity": []} for k in allocators
    }
    try:
        for r in range(repeats + 1):
            order = list(allocators) if r % 2 else list(allocators)[::-1]
            for k in order:
                memory.empty = allocators[k]
                t = time.perf_counter()
                e = ex.explain(x, sparsity=0.7)
                t1 = time.perf_counter()
                f = base.at_sparsity(0.9)
                t2 = time.perf_counter()
                del e, f
                if r:  # round 0 warms both up
                    times[k]["explain"].append(t1 - t)
                    times[k]["at_sparsity"].append(t2 - t1)
    finally:
        memory.empty = allocators["reused"]
    med = {k: {p: statistics.median(v) * 1e3 for p, v in d.items()} for k, d in times.items()}
    cells = []
    for p in ("explain", "at_sparsity"):
        r_, p_ = med["reused"][p], med["plain"][p]
        cells.append(f"{r_:.1f} | {p_:.1f} | {p_ / r_:.3f}")
    return f"| {name} | {batch} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    print(
        "| model | batch | explain ms reused | plain | plain/reused "
        "| at_sparsity ms reused | plain | plain/reused |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in a.models:
        for batch in a.batches:
            print(run(name, batch, a.repeats if batch == 1 else max(3, a.repeats // 3)), flush=True)


if __name__ == "__main__":
    main()
