"""Images per second of batch evaluation with 1 and 2 processes (torchrun).

    python benchmarks/bench_batch.py                       # gradient + map, 24 images
    python benchmarks/bench_batch.py --copies 8 --method pathway_mct --procs 1,2

The sample photos, copied ``--copies`` times into a temporary folder, are evaluated
through ``run_batch`` by each process count (torchrun --standalone). ``loop``: images
per second from after model loading (all ranks aligned by a barrier) to the end of the
run's final gather, resume reading, fsynced writes and rank 0's merge included;
``command``: the whole command, interpreter start and model loading included. One
process uses torch's default threads, N > 1 processes one thread each (torchrun's
default), so the figures compare the two ways of spending the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(folder: str, out: str, method: str, metric: str) -> None:
    """One rank: load the model, align, run, and (rank 0) print the loop's figures."""
    from critpath_widgets.batch import find_images, ranks, run_batch
    from critpath_widgets.batch.command import ModelEvaluator
    from critpath_widgets.models import load_model

    files = find_images([folder])
    with ranks("cpu") as rk:
        ev = ModelEvaluator(load_model(), [metric], device=rk.device)
        rk.gather(None)  # barrier: every rank has its model
        t0 = time.perf_counter()
        res = run_batch(files, [method], ev, out, rk, progress=False)
        dt = time.perf_counter() - t0
        if rk.rank == 0:
            print(json.dumps({"images": len(files), "loop_s": dt, "records": len(res.records)}))


def main() -> None:
    """Run the workers for each process count and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--method", default="gradient")
    p.add_argument("--metric", default="map")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--worker", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(*a.worker, a.method, a.metric)
        return
    from critpath_widgets.models import _sample_files

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"load: {os.getloadavg()[0]:.2f}; {a.method} + {a.metric}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "imgs")
        folder.mkdir()
        for name, src in _sample_files().items():
            for c in range(a.copies):
                shutil.copy(src, folder / f"{name}_{c}{src.suffix}")
        cols = ("procs", "threads", "images", "loop img/s", "command img/s")
        print("  ".join(f"{c:>{len(c)}}" for c in cols))
        runs = [
            (n, t) for n in map(int, a.procs.split(",")) for t in ((None, 1) if n == 1 else (1,))
        ]
        for n, threads in runs:
            out = Path(tmp, f"r{n}_{threads}.jsonl")
            env.pop("OMP_NUM_THREADS", None)
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
            args = [__file__, "--method", a.method, "--metric", a.metric]
            args += ["--worker", str(folder), str(out)]
            if n == 1:
                cmd = [sys.executable, *args]
            else:
                run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
                cmd = [*run, "--nproc-per-node", str(n), *args]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{n} processes failed:\n{r.stderr[-3000:]}")
            fig = json.loads(r.stdout.strip().splitlines()[-1])
            m = fig["images"]
            t = "default" if threads is None else str(threads)
            print(f"{n:>5}  {t:>7}  {m:>6}  {m / fig['loop_s']:>10.2f}  {m / wall:>13.2f}")


if __name__ == "__main__":
    main()
