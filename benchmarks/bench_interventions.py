"""Interventions and the channel gallery, as ratios to the plain gradient in one run.

    python benchmarks/bench_interventions.py                  # efficientnet_lite0, batch 1
    python benchmarks/bench_interventions.py --batch 1 8 --repeats 15

Prints the median time of the plain input gradient (autograd on the model as the user
has it), ``at_sparsity`` from cached scores, ``with_overrides`` on the pathway (three
channels of the last site dropped, one kept) and on the full network (an ablation),
each over the plain gradient, measured in alternation (paired ratios, quartiles), and
the channel gallery's one-time cost over the sample photos and its ``top_patches`` call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import _interleaved, _quartiles  # noqa: E402


def run(batch: int, repeats: int, device: str) -> dict:
    import torch

    import critpath_widgets as cw
    from critpath_widgets.gallery import ChannelGallery

    bundle = cw.load_model()
    model = bundle.model.to(device)
    x = bundle.preprocess(cw.sample_image("coffee"))[None].repeat(batch, 1, 1, 1).to(device)
    ex = cw.PathwayExplainer(model)
    e = ex.explain(x, sparsity=0.7)
    last = len(e.site_names) - 1
    top = e.layer_summary()[last].channel_total.topk(4).indices.tolist()
    drop, keep = {last: top[:3]}, {last - 1: [0]}

    def grad() -> None:
        xg = x.detach().requires_grad_(True)
        y = model(xg)
        torch.autograd.grad(y[:, int(e.target[0])].sum(), xg)

    fns = {
        "grad": grad,
        "at_sparsity": lambda: e.at_sparsity(0.6),
        "overrides_pathway": lambda: e.with_overrides(drop=drop, keep=keep),
        "overrides_full": lambda: e.with_overrides(drop=drop, network="full"),
    }
    med, paired = _interleaved(fns, repeats)
    out = {
        "batch": batch,
        "device": device,
        "grad_ms": med["grad"] * 1e3,
        **{
            f"{k}/grad": {
                "median": statistics.median(paired[k]),
                "quartiles": _quartiles(paired[k]),
            }
            for k in fns
            if k != "grad"
        },
    }
    if batch == 1:
        gallery = ChannelGallery(ex, None, preprocess=bundle.preprocess, crop=bundle.crop)
        t = time.perf_counter()
        gallery.site_names  # noqa: B018 - computes the gallery
        build = time.perf_counter() - t
        t = time.perf_counter()
        gallery.top_patches(last, top[0], k=6)
        out["gallery_build_s"] = build
        out["gallery_pictures"] = len(gallery.names)
        out["top_patches_ms"] = (time.perf_counter() - t) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for b in args.batch:
        print(json.dumps(run(b, args.repeats, args.device), indent=1))


if __name__ == "__main__":
    main()
