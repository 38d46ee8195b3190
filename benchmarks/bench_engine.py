"""Engine speed as ratios measured in one run: pathway explanation / plain gradient.

    python benchmarks/bench_engine.py                 # efficientnet_lite0, resnet50, vgg16
    python benchmarks/bench_engine.py --models resnet50 --no-naive
    python benchmarks/bench_engine.py --models efficientnet_lite0 --no-naive --processes 5

For each model (224x224, batch 1; random weights for torchvision models, which are
offline here, the real weights for efficientnet_lite0) it prints the median time of
the plain input gradient (autograd on the model as the user has it: ``grad``),
NeuronMCT + pathway gradient (also at sparsity 0.3 and
with scope="layer"), ``at_sparsity`` from cached scores, the batch-of-8 ratio, and
NeuronIntGrad (steps=10) against the straightforward loop of one forward/backward per
site and alpha (tests/reference.py), with the largest score difference between the two.

The engine runs a twin of the model with its BatchNorms folded into the convolutions
(engine/fold.py), which also makes its own ``gradient()`` faster than ``grad``. So the
table also prints NeuronMCT over that folded gradient (``mct/fgrad``: the explanation's
cost in gradients of the network it runs) and NeuronMCT with folding off
(``unfolded/grad``), all measured in the same rounds.
Each model runs in its own process so that the peak resident memory printed is that
model's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _interleaved(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median time of each function, measured in alternation to share any drift; also
    every round's time of each function over the first one's (paired ratios)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = times[next(iter(fns))]
    paired = {k: [a / b for a, b in zip(v, base, strict=True)] for k, v in times.items()}
    return {k: statistics.median(v) for k, v in times.items()}, paired


def _quartiles(v: list[float]) -> list[float]:
    """First and third quartile of the paired ratios (the spread the machine's noise gives)."""
    q = statistics.quantiles(v, n=4, method="inclusive")
    return [q[0], q[2]]


def _max_rel_diff(a, w) -> float:
    """Largest |a - w| over sites, relative to each site's largest |w|."""
    return max(
        float((x.double() - y.double()).abs().max() / y.double().abs().max().clamp(min=1e-30))
        for x, y in zip(a, w, strict=True)
    )


def run_one(name: str, repeats: int, naive: bool, device: str, f64: bool = False) -> dict:
    import torch

    import critpath_widgets as cw
    from tests import reference as ref

    torch.manual_seed(0)
    b = cw.load_model(name, weights=None if name == "efficientnet_lite0" else "random")
    model = b.model.to(device)
    x = b.preprocess(cw.sample_image("coffee"))[None].to(device)
    ex = cw.PathwayExplainer(model)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(f):
        def g():
            f()
            sync()

        return g

    def plain_gradient(inp):
        """What a user gets from autograd on their own model: the baseline."""
        xg = inp.detach().requires_grad_(True)
        logits = model(xg)
        y = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        return torch.autograd.grad(y, xg)[0]

    unfolded = cw.PathwayExplainer(model, fold_batchnorm=False)

    e = ex.explain(x, sparsity=0.7)
    res: dict = {
        "model": name,
        "device": device,
        "sites": len(e.site_names),
        "neurons": e.pathway.neurons,
    }
    t, paired = _interleaved(
        {
            "gradient": timed(lambda: plain_gradient(x)),
            "neuron_mct": timed(lambda: ex.explain(x, sparsity=0.7)),
            "folded_gradient": timed(lambda: ex.gradient(x)),
            "unfolded_mct": timed(lambda: unfolded.explain(x, sparsity=0.7)),
            "at_sparsity": timed(lambda: e.at_sparsity(0.9)),
            # settings the widget offers: a low sparsity (the pathway cut among dead
            # neurons' tied zero scores) and the per-layer scope
            "mct_s03": timed(lambda: ex.explain(x, sparsity=0.3)),
            "mct_layer": timed(lambda: ex.explain(x, sparsity=0.7, scope="layer")),
        },
        repeats,
    )
    res.update({f"t_{k}": v for k, v in t.items()})
    res["folded_pairs"] = ex.folded_pairs
    res["q_neuron_mct"] = _quartiles(paired["neuron_mct"])
    xb = torch.cat([x, x.flip(3), x.flip(2), x.roll(16, 3)] * 2)
    tb, paired_b = _interleaved(
        {
            "gradient_b8": timed(lambda: plain_gradient(xb)),
            "neuron_mct_b8": timed(lambda: ex.explain(xb, sparsity=0.7)),
            "folded_gradient_b8": timed(lambda: ex.gradient(xb)),
        },
        max(2, repeats // 2),
    )
    res.update({f"t_{k}": v for k, v in tb.items()})
    res["q_neuron_mct_b8"] = _quartiles(paired_b["neuron_mct_b8"])
    t0 = time.perf_counter()
    ei = ex.explain(x, method="neuron_intgrad", steps=10, sparsity=0.7)
    sync()
    res["t_intgrad"] = time.perf_counter() - t0
    if naive:
        t0 = time.perf_counter()
        want = ref.intgrad_scores_loop(model, x, ei.target, steps=10)
        sync()
        res["t_intgrad_naive"] = time.perf_counter() - t0
        res["intgrad_max_rel_diff"] = _max_rel_diff(ei.scores, want)
        if f64:  # float32's own error: both float32 results against a float64 loop
            import copy

            exact = ref.intgrad_scores_loop(
                copy.deepcopy(model).double(), x.double(), ei.target, steps=10
            )
            res["naive_f32_vs_f64"] = _max_rel_diff(want, exact)
            res["ours_f32_vs_f64"] = _max_rel_diff(ei.scores, exact)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _ratios(r: dict) -> dict[str, float]:
    """The ratios the table prints, from one process's times."""
    g = r["t_gradient"]
    naive = r.get("t_intgrad_naive")
    return {
        "mct": r["t_neuron_mct"] / g,
        "fgrad": r["t_folded_gradient"] / g,
        "mct_f": r["t_neuron_mct"] / r["t_folded_gradient"],
        "unfolded": r["t_unfolded_mct"] / g,
        "b8_f": r["t_neuron_mct_b8"] / r["t_folded_gradient_b8"],
        "at_sp": r["t_at_sparsity"] / g,
        "s03": r["t_mct_s03"] / g,
        "layer": r["t_mct_layer"] / g,
        "b8": r["t_neuron_mct_b8"] / r["t_gradient_b8"],
        "intgrad": r["t_intgrad"] / g,
        "naive": naive / r["t_intgrad"] if naive else float("nan"),
    }


def _row(runs: list[dict]) -> dict:
    """One table row from one or several processes' results: the median over them of the
    gradient time, of every ratio and of the quartiles; every process's NeuronMCT ratios."""
    med = statistics.median
    per = [_ratios(x) for x in runs]
    return {
        **runs[0],
        "t_gradient": med(x["t_gradient"] for x in runs),
        "ratios": {k: med(p[k] for p in per) for k in per[0]},
        "q_neuron_mct": [med(x["q_neuron_mct"][j] for x in runs) for j in (0, 1)],
        "q_neuron_mct_b8": [med(x["q_neuron_mct_b8"][j] for x in runs) for j in (0, 1)],
        "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
        "per_process": [(p["mct"], p["b8"]) for p in per],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet50", "vgg16"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-naive", action="store_true", help="skip the slow reference loop")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--f64",
        action="store_true",
        help="also run the loop in float64 to show float32's own error (slow)",
    )
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run the model processes with glibc told to keep freed memory "
        "(MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_): shows how much of "
        "each time is the kernel handing out fresh pages; the library never sets this",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="measure each model in this many fresh processes, one after the other; the "
        "table then shows the median over them of each ratio (the gradient's own speed "
        "varies by up to 30 %% between processes here) and every process's NeuronMCT ratios",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.repeats, not a.no_naive, a.device, a.f64)))
        return
    import torch

    env = dict(os.environ)
    if a.keep_freed_memory:
        env.update(
            MALLOC_MMAP_THRESHOLD_=str(2**32),
            MALLOC_TRIM_THRESHOLD_=str(2**36),
            MALLOC_TOP_PAD_=str(2**30),
        )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}"
        + (", glibc keeps freed memory" if a.keep_freed_memory else "")
    )
    rows = []
    for m in a.models:
        cmd = (
            [
                sys.executable,
                __file__,
                "--one",
                m,
                "--repeats",
                str(a.repeats),
                "--device",
                a.device,
            ]
            + (["--no-naive"] if a.no_naive else [])
            + (["--f64"] if a.f64 else [])
        )
        runs = []
        for _ in range(max(1, a.processes)):
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        rows.append(_row(runs))
    print()
    hdr = (
        f"{'model':20} {'sites':>5} {'neurons':>10} {'grad ms':>8} {'mct/grad':>8} "
        f"{'at_sp/grad':>10} {'b8 mct/grad':>11} {'s0.3/grad':>9} {'layer/grad':>10} "
        f"{'intgrad/grad':>12} {'naive/ours':>10} "
        f"{'IG rel diff':>11} {'peak MB':>8}"
    )
    print(hdr)
    for r in rows:
        q = r["ratios"]
        print(
            f"{r['model']:20} {r['sites']:5d} {r['neurons']:10d} {r['t_gradient'] * 1000:8.1f} "
            f"{q['mct']:8.2f} {q['at_sp']:10.2f} {q['b8']:11.2f} {q['s03']:9.2f} "
            f"{q['layer']:10.2f} {q['intgrad']:12.1f} "
            f"{q['naive']:10.2f} "
            f"{r.get('intgrad_max_rel_diff', float('nan')):11.1e} {r['peak_rss_mb']:8.0f}"
        )
    print("targets: mct/grad <= 2.3, at_sp/grad <= 1.2, b8 mct/grad <= 2.3, naive/ours >= 2")
    print()
    print("BatchNorm folding (grad: autograd on the user's model; fgrad: the engine's gradient")
    print("on the folded twin that the explanation also runs; unfolded: fold_batchnorm=False)")
    print(
        f"{'model':20} {'pairs':>5} {'fgrad/grad':>10} {'mct/fgrad':>9} "
        f"{'b8 mct/fgrad':>12} {'unfolded/grad':>13}"
    )
    for r in rows:
        q = r["ratios"]
        print(
            f"{r['model']:20} {r['folded_pairs']:5d} {q['fgrad']:10.2f} {q['mct_f']:9.2f} "
            f"{q['b8_f']:12.2f} {q['unfolded']:13.2f}"
        )
    print("s0.3: NeuronMCT at sparsity 0.3; layer: scope='layer' at 0.7 (no targets set)")
    if a.processes > 1:
        print(f"medians over {a.processes} processes; each process's mct/grad and b8 mct/grad:")
        for r in rows:
            per = ", ".join(f"{x:.2f}/{y:.2f}" for x, y in r["per_process"])
            print(f"{r['model']:20} {per}")
    print("spread: each round's explanation time over the gradient time measured beside it")
    for r in rows:
        q1, q3 = r["q_neuron_mct"]
        b1, b3 = r["q_neuron_mct_b8"]
        print(
            f"{r['model']:20} mct/grad quartiles {q1:.2f}-{q3:.2f}, "
            f"b8 mct/grad quartiles {b1:.2f}-{b3:.2f}"
        )
    for r in rows:
        if "ours_f32_vs_f64" in r:
            print(
                f"{r['model']}: against a float64 loop, the float32 loop is off by "
                f"{r['naive_f32_vs_f64']:.1e} and ours by {r['ours_f32_vs_f64']:.1e}"
            )


if __name__ == "__main__":
    main()
