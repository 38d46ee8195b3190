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


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_parsers(sub: Any) -> None:
    """The evaluate and summarize subcommands, on the CLI's subparsers."""
    e = sub.add_parser("evaluate", help="evaluate methods on many images into a JSONL file")
    e.add_argument("images", nargs="+", help="image files, folders (recursive) or sample names")
    e.add_argument("--methods", default="gradient,pathway_mct", help="comma-separated")
    e.add_argument("--metrics", default="map", help=f"comma-separated: {', '.join(M.METRICS)}")
    e.add_argument("--model", default="efficientnet_lite0")
    e.add_argument("--weights", default=None, help="state-dict file for torchvision models")
    e.add_argument("--target", type=int, default=None, help="class index (default: predicted)")
    e.add_argument("--steps", type=int, default=20, help="steps of deletion/insertion")
    e.add_argument("--out", default="results.jsonl")
    e.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if any), cpu, cuda")
    e.add_argument("--retry-skipped", action="store_true", help="retry unreadable images")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument(
        "--dist-timeout", type=float, default=24 * 60, help="minutes a rank waits for others"
    )
    s = sub.add_parser("summarize", help="summary table of a results file")
    s.add_argument("results", help="JSONL file written by critpath evaluate")


def evaluate(a: argparse.Namespace) -> int:
    """Run ``critpath evaluate``: one record per (image, method), then the summary."""
    from ..models import load_model

    logging.basicConfig(format="critpath: %(levelname)s: %(message)s", level=logging.INFO)
    methods, metrics = _split(a.methods), _split(a.metrics)
    if not methods or not metrics:
        raise InputError("--methods and --metrics need at least one name each")
    if a.steps < 1:
        raise InputError(f"--steps must be at least 1, got {a.steps}")
    M.check(methods, metrics)
    files = find_images(a.images)
    label = model_label(a.model, a.weights)
    check_resumable(a.out, label)
    with ranks(a.device, a.dist_timeout) as rk:
        evaluator = ModelEvaluator(
            load_model(a.model, weights=a.weights), metrics, a.target, a.steps, rk.device, label
        )
        res = run_batch(files, methods, evaluator, a.out, rk, not a.no_progress, a.retry_skipped)
        if rk.rank == 0:
            print(summary_table(res.records))
            print(f"wrote {a.out}")
    return 0


def summarize(a: argparse.Namespace) -> int:
    """Run ``critpath summarize``: the summary table of a results file."""
    records = read_records(a.results)
    if not records:
        raise InputError(f"no records in {a.results}")
    print(summary_table(records))
    return 0


__all__ = ["ModelEvaluator", "add_parsers", "evaluate", "summarize"]
