"""Kernel side of scrubbing: how long the stack of pathway maps takes, and its size.

Opens the explorer on its offline default (EfficientNet-Lite0, sample photo "coffee"),
then for ``--n`` scorings (method / target changes) times the stack the worker builds
after showing the result (``_scrub.stats["last_s"]``: from the shown result to the whole
stack loaded into the overlay, 17 levels), and in the same run one bare
``at_sparsity`` + map (the unit of work per level), so the stack can be read as a
multiple of it on any machine. Also: the bytes of one stack (uint8, K x H x W).

    .venv/bin/python benchmarks/bench_scrub.py [--n 3] [--json out.json]

Target (issue 17): whole stack within 1.5 s of the explanation on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3, help="scorings whose stack is timed")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from critpath_widgets import PathwayExplorer
    from critpath_widgets.widgets.colormaps import display_map
    from critpath_widgets.widgets.stack_codec import SCRUB_LEVELS

    w = PathwayExplorer()
    w.wait(timeout=900)
    if w.last_error is not None:
        raise SystemExit(f"explorer failed: {w.message_text}")
    stacks = [w._scrub.stats["last_s"]]
    probs = torch.softmax(w.explanation.logits[0], 0)
    targets = probs.argsort(descending=True)[1 : args.n].tolist()
    for t in targets:  # a new target: new scores, then a new stack
        w.target = int(t)
        w.wait(timeout=900)
        stacks.append(w._scrub.stats["last_s"])
    ov = w.pathway_overlay
    e = w.explanation
    level = []
    for s in (0.33, 0.52, 0.81):
        t0 = time.perf_counter()
        display_map(w._session.saliency(e.at_sparsity(s)), ov.sign, ov.smooth)
        level.append(time.perf_counter() - t0)
    unit = statistics.median(level)
    out = {
        "model": "EfficientNet-Lite0 (load_model), sample 'coffee'",
        "levels": len(SCRUB_LEVELS),
        "stack_s": stacks,
        "stack_median_s": statistics.median(stacks),
        "one_level_s": unit,
        "stack_over_one_level": statistics.median(stacks) / unit,
        "bytes_per_stack": len(ov.stack),
        "map_shape": list(ov.shape),
        "threads": torch.get_num_threads(),
    }
    w.close()
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
