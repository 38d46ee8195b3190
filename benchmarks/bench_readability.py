"""Readability of the painted maps, old rendering against the new default (issue #16).

    python benchmarks/bench_readability.py                  # all sample photos
    python benchmarks/bench_readability.py --photos coffee chelsea

On each sample photo, with the default model (efficientnet_lite0), the predicted
class, sparsity 0.7 and global scope, it computes the pathway gradient of NeuronMCT,
of the random pathway and of NeuronIntGrad (``saliency_map("max_abs")``: per pixel
the largest |gradient| over the colour channels) and paints each with

* OLD: ``MapStyle.signed()``, the former default (RdBu_r, signed, alpha =
  0.6 x |v| / vmax, 99.5th-percentile clip, no smoothing, photo as is);
* NEW: ``MapStyle()``, the readable default (inferno heat of the magnitude, alpha =
  0.9 x (m / vmax) ** 2 of the display-blurred magnitude m, 99th-percentile clip,
  photo muted).

"Displayed heat" is :func:`critpath_widgets.report.painted_heat`: the heat layer's
alpha per map pixel (224 x 224), exactly what the figure and the browser paint.
It prints, per photo and rendering:

(a) ``share``: the share of the displayed heat mass (sum of alpha) that lies inside
    the top 10 % of pixels ranked by the RAW map magnitude (the engine's max_abs map,
    not the blurred one). A uniform map gives 0.10; higher means the reader's eye is
    drawn to where the evidence is rather than spread over a veil of speckle.
(b) ``rho(random, mct)``: Spearman correlation (scipy.stats.spearmanr) between the
    displayed heat of the random pathway and of NeuronMCT: low means they look
    different.
(c) ``rho(mct, intgrad)``: the same between NeuronMCT and NeuronIntGrad, for contrast
    (two contribution pathways that should look alike).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: share of the pixels counted as "top" in (a)
TOP = 0.10


def top_share(heat: np.ndarray, magnitude: np.ndarray, top: float = TOP) -> float:
    """Share of ``heat``'s sum inside the ``top`` share of pixels ranked by ``magnitude``."""
    h = np.asarray(heat, dtype=np.float64).ravel()
    m = np.asarray(magnitude, dtype=np.float64).ravel()
    k = max(1, int(round(top * m.size)))
    idx = np.argsort(m, kind="stable")[-k:]
    total = h.sum()
    return float(h[idx].sum() / total) if total > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps, pixel by pixel."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b))[0])


def pathway_maps(photos: list[str], methods: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Per photo and method the (H, W) max_abs pathway gradient of the predicted class."""
    import critpath_widgets as cw
    from critpath_widgets.engine import PathwayExplainer

    bundle = cw.load_model()
    ex = PathwayExplainer(bundle.model)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in photos:
        x = bundle.preprocess(cw.sample_image(name))[None]
        target = None
        out[name] = {}
        for method in methods:
            e = ex.explain(x, target=target, method=method, sparsity=0.7, scope="global")
            target = int(e.target[0])  # every method explains the same class
            out[name][method] = e.saliency_map("max_abs")[0].numpy()
    return out


def measure(maps: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """(a), (b) and (c) for one photo's maps, for the OLD and the NEW rendering."""
    from critpath_widgets.report import MapStyle, painted_heat

    res: dict[str, dict[str, float]] = {}
    for label, style in (("old", MapStyle.signed()), ("new", MapStyle())):
        heat = {m: painted_heat(v, style) for m, v in maps.items()}
        row = {"share": top_share(heat["neuron_mct"], np.abs(maps["neuron_mct"]))}
        row["uniform"] = top_share(np.ones_like(heat["neuron_mct"]), np.abs(maps["neuron_mct"]))
        row["rho_random_mct"] = spearman(heat["random"], heat["neuron_mct"])
        if "neuron_intgrad" in heat:
            row["rho_mct_intgrad"] = spearman(heat["neuron_mct"], heat["neuron_intgrad"])
        res[label] = row
    return res


def main(argv: list[str] | None = None) -> None:
    """Print the table of (a), (b), (c) per photo, old and new."""
    import critpath_widgets as cw

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", nargs="*", default=cw.sample_images())
    a = p.parse_args(argv)
    maps = pathway_maps(a.photos, ("neuron_mct", "random", "neuron_intgrad"))
    print(
        f"{'photo':13s} {'render':6s} {'share':>6s} {'uniform':>7s} {'rho(rnd,mct)':>12s} "
        f"{'rho(mct,ig)':>11s}"
    )
    for name in a.photos:
        r = measure(maps[name])
        for label in ("old", "new"):
            x = r[label]
            print(
                f"{name:13s} {label:6s} {x['share']:6.3f} {x['uniform']:7.3f} "
                f"{x['rho_random_mct']:12.3f} {x['rho_mct_intgrad']:11.3f}"
            )
        print(f"{name:13s} share new/old = {r['new']['share'] / r['old']['share']:.2f}")


if __name__ == "__main__":
    main()
