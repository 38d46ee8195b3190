"""The paper's known results on the default model and the coffee photo: deletion and
insertion against chance, output retained by NeuronMCT and random pathways, dead share
of the DGR and NeuronMCT pathways, and the cascading-randomisation sanity check.

    python benchmarks/paper_evidence.py
"""
import warnings
import torch
import critpath_widgets as cw
from critpath_widgets import evaluation as ev

warnings.simplefilter("ignore")
b = cw.load_model()
x = b.preprocess(cw.sample_image("coffee"))[None]
ex = cw.PathwayExplainer(b.model)
e = ex.explain(x, sparsity=0.7)
d = ev.deletion(b.model, x, e.saliency, steps=20)
dr = ev.random_baseline(b.model, x, "deletion", steps=20)
g = ev.deletion(b.model, x, ex.gradient(x), steps=20)
i = ev.insertion(b.model, x, e.saliency, steps=20)
ir = ev.random_baseline(b.model, x, "insertion", steps=20)
print(f"deletion AUC: pathway {d.mean_auc:.3f}, gradient {g.mean_auc:.3f}, random {dr.mean_auc:.3f}")
print(f"insertion AUC: pathway {i.mean_auc:.3f}, random {ir.mean_auc:.3f}")
for s in (0.9, 0.99):
    rm = ev.retained(ex, x, "neuron_mct", [s])
    rr = ev.retained(ex, x, "random", [s], seed=0)
    print(f"retained at {s}: mct p={rm.pathway_probability[0,0]:.3f} logit={rm.pathway_logit[0,0]:.2f} argmax {bool(rm.argmax_kept[0,0])}; random p={rr.pathway_probability[0,0]:.3f} logit={rr.pathway_logit[0,0]:.2f} argmax {bool(rr.argmax_kept[0,0])}; full p={rm.probability[0]:.3f}")
dg = ex.explain(x, method="dgr", sparsity=0.7)
print(f"dead share at 0.7: dgr {ev.dead_share(dg).overall:.3f}, mct {ev.dead_share(e).overall:.3f}, network {ev.dead_share(e).network_overall:.3f}")
print(f"jaccard dgr vs mct at 0.7: {ev.jaccard(dg, e).overall:.3f}")
r = ev.sanity_check(b.model, x, ["gradient", "pathway_mct", "guided_backprop"], metrics=("spearman_abs", "ssim"), layers=15)
for m in r.similarity:
    s = r.similarity[m]["spearman_abs"]
    print(f"sanity {m}: spearman_abs step1 {s[1]:.2f} -> step{len(s)-1} {s[-1]:.2f}; ssim end {r.similarity[m]['ssim'][-1]:.2f}")
