"""The paper's known results on the default model and the coffee photo: deletion and
insertion against chance, output retained by NeuronMCT and random pathways, dead share
of the DGR and NeuronMCT pathways, and the cascading-randomisation sanity check.

    python benchmarks/paper_evidence.py [--layers 15]
"""

from __future__ import annotations

import argparse
import warnings

import critpath_widgets as cw
from critpath_widgets import evaluation as ev


def main() -> None:
    """Print each claim's figures, one line each."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=15, help="randomisation steps (None: all)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    b = cw.load_model()
    x = b.preprocess(cw.sample_image("coffee"))[None]
    ex = cw.PathwayExplainer(b.model)
    e = ex.explain(x, sparsity=0.7)

    d = ev.deletion(b.model, x, e.saliency, steps=20)
    g = ev.deletion(b.model, x, ex.gradient(x), steps=20)
    dr = ev.random_baseline(b.model, x, "deletion", steps=20)
    print(
        f"deletion AUC: pathway {d.mean_auc:.3f}, gradient {g.mean_auc:.3f}, "
        f"random {dr.mean_auc:.3f}"
    )
    i = ev.insertion(b.model, x, e.saliency, steps=20)
    ir = ev.random_baseline(b.model, x, "insertion", steps=20)
    print(f"insertion AUC: pathway {i.mean_auc:.3f}, random {ir.mean_auc:.3f}")

    for s in (0.9, 0.99):
        rm = ev.retained(ex, x, "neuron_mct", [s])
        rr = ev.retained(ex, x, "random", [s], seed=0)
        print(
            f"retained at {s}: neuron_mct p={rm.pathway_probability[0, 0]:.3f} "
            f"(top class kept: {bool(rm.argmax_kept[0, 0])}), random "
            f"p={rr.pathway_probability[0, 0]:.3f} (kept: {bool(rr.argmax_kept[0, 0])}); "
            f"full network p={rm.probability[0]:.3f}"
        )

    dg = ex.explain(x, method="dgr", sparsity=0.7)
    mct_dead = ev.dead_share(e)
    print(
        f"dead share at 0.7: dgr {ev.dead_share(dg).overall:.3f}, neuron_mct "
        f"{mct_dead.overall:.3f}, all neurons {mct_dead.network_overall:.3f}; "
        f"jaccard dgr/neuron_mct {ev.jaccard(dg, e).overall:.3f}"
    )

    methods = ["gradient", "pathway_mct", "guided_backprop"]
    r = ev.sanity_check(b.model, x, methods, metrics=("spearman_abs", "ssim"), layers=args.layers)
    for m in methods:
        s = r.similarity[m]["spearman_abs"]
        print(
            f"sanity {m}: spearman_abs after 1 layer {s[1]:.2f} -> after {len(s) - 1} "
            f"{s[-1]:.2f}; ssim at the end {r.similarity[m]['ssim'][-1]:.2f}"
        )


if __name__ == "__main__":
    main()
