"""Kernel-side latency of the PathwayExplorer after a sparsity change.

Opens the explorer on its offline default (EfficientNet-Lite0, sample photo "coffee"),
then changes ``w.sparsity`` N times and times ``w.sparsity = s; w.wait()`` (the
worker's masked pass from cached scores + the widget updates). In the same run it times
the explainer's plain input gradient (one forward + backward, on the same BatchNorm-
folded twin the explorer runs) and a bare ``at_sparsity`` call, so
the figures can be compared as ratios on any machine.

    .venv/bin/python benchmarks/bench_widget_latency.py [--n 20] [--method neuron_mct]

Target on the 2-core CI CPU: median update latency <= 150 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="sparsity changes to time")
    parser.add_argument("--method", default="neuron_mct")
    parser.add_argument("--scope", default="global", choices=("global", "layer"))
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    from critpath_widgets import PathwayExplorer

    t0 = time.perf_counter()
    w = PathwayExplorer(method=args.method, scope=args.scope)
    w.wait(timeout=600)
    first = time.perf_counter() - t0
    if w.last_error is not None:
        raise SystemExit(f"explorer failed: {w.message_text}")

    # sparsity values that all differ from each other and from the start value
    values = [round(0.50 + 0.49 * i / max(args.n - 1, 1), 2) for i in range(args.n)]
    values = [v if abs(v - w.sparsity) > 1e-9 else round(v - 0.005, 3) for v in values]
    # warm-up (first at_sparsity may allocate)
    for s in (0.6, 0.8):
        w.sparsity = s
        w.wait(timeout=120)
    latencies, compute, show = [], [], []
    for s in values:
        t = time.perf_counter()
        w.sparsity = s
        w.wait(timeout=120)
        latencies.append(time.perf_counter() - t)
        compute.append(w.last_timing["compute_s"])
        show.append(w.last_timing["show_s"])
        assert abs(float(w.explanation.sparsity) - s) < 1e-9, (w.explanation.sparsity, s)
    stats = dict(w.stats)

    x, target = w.explanation.inputs, w.target
    grad_times = []
    for _ in range(max(5, args.n // 2)):
        t = time.perf_counter()
        w.explainer.gradient(x, target=target)
        grad_times.append(time.perf_counter() - t)
    e = w.explanation
    bare = []
    for s in values[: max(5, args.n // 2)]:
        t = time.perf_counter()
        e.at_sparsity(s)
        bare.append(time.perf_counter() - t)
    w.close()

    result = {
        "model": "efficientnet_lite0 (default)",
        "method": args.method,
        "scope": args.scope,
        "n": len(latencies),
        "torch_threads": torch.get_num_threads(),
        "first_view_s": round(first, 3),
        "update_median_ms": round(_median_ms(latencies), 1),
        "update_p90_ms": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))] * 1000.0, 1),
        "update_min_ms": round(min(latencies) * 1000.0, 1),
        "worker_compute_median_ms": round(_median_ms(compute), 1),
        "worker_show_median_ms": round(_median_ms(show), 1),
        "bare_at_sparsity_median_ms": round(_median_ms(bare), 1),
        "plain_gradient_median_ms": round(_median_ms(grad_times), 1),
        "explain_calls": stats["explain"],
        "at_sparsity_calls": stats["at_sparsity"],
    }
    result["update_over_gradient"] = round(
        result["update_median_ms"] / result["plain_gradient_median_ms"], 2
    )
    result["target_ms"] = 150.0
    result["meets_target"] = result["update_median_ms"] <= 150.0
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"PathwayExplorer sparsity-change latency ({result['model']}, {args.method}, "
            f"{args.scope}, {result['n']} changes, {result['torch_threads']} torch threads)"
        )
        print(f"  first view (model load + score + show): {result['first_view_s']:.2f} s")
        print(
            f"  update latency: median {result['update_median_ms']:.1f} ms, "
            f"p90 {result['update_p90_ms']:.1f} ms, min {result['update_min_ms']:.1f} ms"
        )
        print(
            f"  of which in the worker: at_sparsity {result['worker_compute_median_ms']:.1f} ms"
            f" + widget updates {result['worker_show_median_ms']:.1f} ms (medians)"
        )
        print(
            f"  bare Explanation.at_sparsity: median {result['bare_at_sparsity_median_ms']:.1f} ms"
        )
        print(
            f"  plain input gradient (explainer.gradient, folded twin): median "
            f"{result['plain_gradient_median_ms']:.1f} ms"
        )
        print(
            f"  ratio update / plain gradient: {result['update_over_gradient']:.2f}x; "
            f"target median <= 150 ms: {'met' if result['meets_target'] else 'NOT met'}"
        )
        print(
            f"  explain() calls: {result['explain_calls']} (scores cached), "
            f"at_sparsity calls: {result['at_sparsity_calls']}"
        )
    return result


if __name__ == "__main__":
    main()
