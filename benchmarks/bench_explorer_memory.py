"""Kernel memory of the PathwayExplorer on the default model at one photo, step by step.

    python benchmarks/bench_explorer_memory.py            # runs the steps in a fresh process
    python benchmarks/bench_explorer_memory.py --json     # the same figures as JSON

A fresh subprocess (so nothing else is resident) reports its resident set size (VmRSS)
and peak (VmHWM) from /proc/self/status after: import, the default model, the
explorer's first result on "coffee", three slider moves, a method change, two more
scorings (per-layer scope), two baselines (guided backprop, integrated gradients) and
one run of the evaluation panel; with the
bytes held by the explorer's caches (tensors and arrays reachable from them) and
whether any cached tensor keeps an autograd graph. The issue's target: under 1 GB RSS
after the first result (the steps after it add what the user asked for).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def proc_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MiB (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _child() -> None:
    """The measured steps, in this (fresh) process; prints one JSON line per step."""
    sys.path.insert(0, str(ROOT))
    # one intra-op thread pool as a notebook kernel has; fixed so runs compare
    steps: list[dict] = []

    def mark(name: str, w=None) -> None:
        row = {"step": name, **proc_status(), "pool_mib": 0.0}
        memory = sys.modules.get("critpath_widgets.engine.memory")
        if memory is not None:  # (importing it would import torch)
            row["pool_mib"] = memory.idle_bytes() / MIB
        if w is not None:
            from critpath_widgets.widgets.explorer.caches import cache_report

            rep = cache_report(w._session)
            row["cache_mib"] = rep["bytes"] / MIB
            row["graphs"] = rep["graphs"]
            row["entries"] = rep["entries"]
        steps.append(row)
        print(json.dumps(row), flush=True)

    mark("start")
    import torch  # noqa: F401

    import critpath_widgets  # noqa: F401
    from critpath_widgets.widgets.explorer import PathwayExplorer, worker

    trims: list[float] = []
    plain_trim = worker.trim_heap

    def timed_trim() -> bool:  # the worker's trim, timed
        t = time.perf_counter()
        done = plain_trim()
        trims.append(time.perf_counter() - t)
        return done

    worker.trim_heap = timed_trim
    mark("import")
    from critpath_widgets.models import load_model

    bundle = load_model()
    mark("model loaded")
    w = PathwayExplorer(bundle)

    def settle() -> None:  # the result on show, and the idle worker's heap trim done
        w.wait(600)
        time.sleep(worker.TRIM_AFTER_IDLE_S + 0.5)

    settle()
    mark("first result", w)
    slider = []
    for s in (0.5, 0.8, 0.9):
        w.sparsity = s
        settle()
        slider.append(w.last_timing["compute_s"] + w.last_timing["show_s"])
    mark("3 slider moves", w)
    ratio = statistics.median(trims) / statistics.median(slider)
    print(json.dumps({"trim_per_slider_move": ratio}), flush=True)
    w.method = "random"
    settle()
    mark("method change", w)
    w.scope = "layer"
    settle()
    w.method = "neuron_mct"
    settle()
    mark("4 scorings", w)
    for b in ("guided_backprop", "integrated_gradients"):
        if b in w._methods:
            w.method = b
            settle()
    mark("2 baselines", w)
    w.method = "neuron_mct"
    settle()
    w.evaluation.steps.value = 8
    w.evaluation.run()
    w.evaluation.wait(600)
    mark("evaluation run", w)
    w.close()


def main() -> None:
    """Run the steps in a fresh subprocess and print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child()
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [r for r in lines if "step" in r]
    ratio = next((r["trim_per_slider_move"] for r in lines if "trim_per_slider_move" in r), None)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(proc.returncode)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"{'step':<18}{'RSS MiB':>9}{'anon':>7}{'file':>7}{'peak MiB':>10}"
        f"{'caches MiB':>12}{'pool':>6}{'graphs':>8}"
    )
    for r in rows:
        cache = f"{r['cache_mib']:.1f}" if "cache_mib" in r else "-"
        graphs = str(r.get("graphs", "-"))
        print(
            f"{r['step']:<18}{r['VmRSS']:>9.0f}{r['RssAnon']:>7.0f}{r['RssFile']:>7.0f}"
            f"{r['VmHWM']:>10.0f}{cache:>12}{r['pool_mib']:>6.0f}{graphs:>8}"
        )
    first = next(r for r in rows if r["step"] == "first result")
    print(f"first result / 1 GiB target: {first['VmRSS'] / 1024:.2f}")
    if ratio is not None:
        print(f"heap trim (once idle) / slider move (compute + show), medians: {ratio:.3f}")


if __name__ == "__main__":
    main()
