"""``critpath evaluate`` and ``critpath summarize``: a model and its metrics per image."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from . import metrics as M
from .distributed import ranks
from .images import find_images, load_image
from .runner import run_batch
from .store import read_records, shard_files
from .summary import summary_table


@dataclass
class Prepared:
    """One image ready for its methods: input batch of one, target and its answer."""

    x: torch.Tensor
    target: int
    label: str
    prob: float


class ModelEvaluator:
    """Per image: load, preprocess and predict once; per method: the map and metrics."""

    def __init__(
        self,
        bundle: Any,
        metrics: list[str],
        target: int | None = None,
        steps: int = 20,
        device: torch.device | None = None,
        name: str | None = None,
    ) -> None:
        from ..engine import PathwayExplainer

        self.bundle = bundle
        self.name = name or bundle.name
        self.device = device or torch.device("cpu")
        self.model = bundle.model.to(self.device)
        self.explainer = PathwayExplainer(self.model)
        self.metrics = metrics
        self.target = target
        self.steps = steps
        n = len(bundle.categories)
        if target is not None and not 0 <= target < n:
            raise InputError(f"--target {target} is not a class index (0..{n - 1})")

    def prepare(self, key: str) -> Prepared:
        """Load and predict (InputError for an unreadable image: the run skips it)."""
        x = self.bundle.preprocess(load_image(key))[None].to(self.device)
        probs = self.explainer.predict(x).softmax(dim=1)[0]
        t = int(probs.argmax()) if self.target is None else self.target
        return Prepared(x, t, self.bundle.categories[t], float(probs[t]))

    def evaluate(self, p: Prepared, method: str) -> dict[str, Any]:
        """Target, label, probability and every metric's fields of one method's map."""
        pair = M.Pair(self.model, self.explainer, p.x, p.target, method, self.steps)
        return {
            "model": self.name,
            "target": p.target,
            "label": p.label,
            "prob": p.prob,
            **M.compute(pair, self.metrics),
        }


def model_label(model: str, weights: str | None) -> str:
    """The ``model`` field of a record: the name, and the weights file when one is given."""
    name = model.replace("-", "_")  # efficientnet-lite0 is an alias of efficientnet_lite0
    return name if weights is None else f"{name}:{Path(weights).name}"


def check_resumable(out: str, model: str) -> None:
    """Refuse to add to a results file (or its shards) written with another model: a
    resume keys on (file, method) only, and would mix the two models' records."""
    for p in [Path(out), *shard_files(out).values()]:
        for r in read_records(p):
            if "model" in r and r["model"] != model:
                raise InputError(
                    f"{p} holds results of model {r['model']!r}, not {model!r}; "
                    "write to another --out"
                )


EVALUATE_EXAMPLES = """\
examples:
  critpath evaluate coffee chelsea --methods gradient,pathway_mct --metrics deletion
  critpath evaluate photos/ --metrics map,deletion,insertion -o results.jsonl
  critpath evaluate photos/ --target "tabby" --steps 10 --no-progress
  critpath evaluate photos/ --model resnet18 --weights random   # offline, untrained
  torchrun --nproc-per-node 2 -m critpath_widgets evaluate photos/ -o results.jsonl
  critpath summarize results.jsonl
"""


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_parsers(sub: Any) -> None:
    """The evaluate and summarize subcommands, on the CLI's subparsers."""
    from ..cli import add_model_options

    e = sub.add_parser(
        "evaluate",
        help="evaluate methods on many images into a JSONL file",
        description="Compute each method's map on every image and the chosen metrics,\n"
        "one JSON record per (image, method) appended to --out (a rerun resumes),\n"
        "then print the summary table.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("images", nargs="+", help="image files, folders (recursive) or sample names")
    e.add_argument(
        "--methods",
        default="gradient,pathway_mct",
        help=f"comma-separated methods (default gradient,pathway_mct): "
        f"{', '.join(M.available_methods())}",
    )
    e.add_argument(
        "--metrics",
        default="map",
        help=f"comma-separated metrics (default map): {', '.join(M.METRICS)}",
    )
    add_model_options(e)
    e.add_argument(
        "--target",
        default=None,
        metavar="NAME|INDEX",
        help="class to explain on every image: index or (part of) a class name "
        "(default: each image's predicted class)",
    )
    e.add_argument(
        "--steps", type=int, default=20, help="steps of the deletion/insertion curves (default 20)"
    )
    e.add_argument(
        "-o",
        "--out",
        default="results.jsonl",
        help="JSONL results file, appended to and resumed (default results.jsonl)",
    )
    e.add_argument(
        "--device",
        default="auto",
        help="auto (cuda:LOCAL_RANK when CUDA is there, else cpu), cpu, cuda or cuda:N",
    )
    e.add_argument(
        "--retry-skipped",
        action="store_true",
        help="try again the images an earlier run recorded as unreadable",
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    e.add_argument(
        "--dist-timeout",
        type=float,
        default=24 * 60,
        metavar="MINUTES",
        help="under torchrun: minutes a rank waits for the others at the end (default 1440)",
    )
    s = sub.add_parser(
        "summarize",
        help="summary table of a results file",
        description="Print the summary table (mean and spread per method and metric) of a "
        "results file.",
        epilog="example:\n  critpath summarize results.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("results", help="JSONL file written by critpath evaluate")


def check_results_out(out: str) -> Path:
    """``--out`` of evaluate: a file (not a folder) in a folder that exists or can be
    made, and that this process can write to; checked before the model loads."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {path / 'r.jsonl'}")
    if path.exists() and not path.is_file():
        raise InputError(f"--out {out} is not a regular file")
    from ..cli import check_writable

    check_writable(out, path)  # the store creates missing folders
    return path


def check_device(choice: str) -> None:
    """``--device``: a device torch knows, and CUDA only where there is one."""
    if choice == "auto":
        return
    try:
        d = torch.device(choice)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {choice}: use auto, cpu, cuda or cuda:N") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {choice}: no CUDA device here; use --device cpu")
    if d.type not in ("cpu", "cuda"):
        raise InputError(f"--device {choice}: use auto, cpu, cuda or cuda:N")


def evaluate(a: argparse.Namespace) -> int:
    """Run ``critpath evaluate``: one record per (image, method), then the summary."""
    from ..cli import _check_model, _load, parse_target, resolve_target

    logging.basicConfig(format="critpath: %(levelname)s: %(message)s", level=logging.INFO)
    # every argument and path is checked before the model loads
    methods, metrics = _split(a.methods), _split(a.metrics)
    if not methods or not metrics:
        raise InputError("--methods and --metrics need at least one name each")
    if a.steps < 1:
        raise InputError(f"--steps must be at least 1, got {a.steps}")
    if not a.dist_timeout > 0:
        raise InputError(f"--dist-timeout must be more than 0 minutes, got {a.dist_timeout}")
    M.check(methods, metrics)
    target = parse_target(a.target)
    check_device(a.device)
    files = find_images(a.images)
    check_results_out(a.out)
    label = model_label(a.model, a.weights)
    check_resumable(a.out, label)
    _check_model(a.model, a.weights)
    with ranks(a.device, a.dist_timeout) as rk:
        bundle = _load(a.model, a.weights)
        index = resolve_target(target, list(bundle.categories))
        evaluator = ModelEvaluator(bundle, metrics, index, a.steps, rk.device, label)
        res = run_batch(files, methods, evaluator, a.out, rk, not a.no_progress, a.retry_skipped)
        if rk.rank == 0:
            print(summary_table(res.records))
            print(f"wrote {a.out}")
    return 0


def summarize(a: argparse.Namespace) -> int:
    """Run ``critpath summarize``: the summary table of a results file."""
    if not Path(a.results).is_file():
        raise InputError(f"{a.results}: no such results file")
    records = read_records(a.results)
    if not records:
        raise InputError(f"no records in {a.results}")
    print(summary_table(records))
    return 0


__all__ = [
    "EVALUATE_EXAMPLES",
    "ModelEvaluator",
    "add_parsers",
    "check_device",
    "check_results_out",
    "evaluate",
    "summarize",
]
