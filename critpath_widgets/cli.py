"""Command line: explain a photo with its critical pathway and write the figure to a file.

critpath explain coffee --out pathway.png
critpath explain my_photo.jpg --method neuron_intgrad --sparsity 0.9
critpath evaluate photos/ --methods gradient,pathway_mct --metrics deletion --out results.jsonl
critpath summarize results.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .engine import METHODS, SCOPES
from .errors import CritpathError, InputError
from .methods import LONG_METHODS


def _load_image(spec: str):
    from PIL import Image, UnidentifiedImageError

    from .models import sample_image, sample_images

    if spec in sample_images():
        return sample_image(spec)
    p = Path(spec)
    if not p.is_file():
        raise InputError(
            f"{spec!r} is neither an image file nor a sample name ({', '.join(sample_images())})"
        )
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {p} as an image: {e}") from e


def _explain(a: argparse.Namespace) -> int:
    from .engine import PathwayExplainer
    from .models import load_model
    from .report import explanation_figure, save_figure

    bundle = load_model(a.model, weights=a.weights)
    image = _load_image(a.image)
    x = bundle.preprocess(image)[None]
    ex = PathwayExplainer(bundle.model)
    opts = {"progress": True} if a.method in LONG_METHODS else {}
    t0 = time.perf_counter()
    e = ex.explain(x, target=a.target, method=a.method, sparsity=a.sparsity, scope=a.scope, **opts)
    dt = time.perf_counter() - t0
    g = ex.gradient(x, e.target)
    probs = e.logits.softmax(dim=1)[0]
    top = probs.topk(5)
    print(f"model {bundle.name}, image {a.image}")
    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {p:6.3f}  {bundle.categories[i]}")
    t = int(e.target[0])
    kept = int(e.pathway.kept[0])
    print(
        f"explained {bundle.categories[t]!r} with {a.method} in {dt:.2f} s: pathway keeps "
        f"{kept:,} of {e.pathway.neurons:,} neurons ({a.scope}); target logit "
        f"{float(e.logits[0, t]):.2f} -> {float(e.pathway_logits[0, t]):.2f} on the pathway"
    )
    fig = explanation_figure(bundle.crop(image), e, g, bundle.categories)
    print(f"wrote {save_figure(fig, a.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``critpath`` command."""
    p = argparse.ArgumentParser(prog="critpath", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("explain", help="explain an image and write a figure")
    e.add_argument("image", nargs="?", default="coffee", help="image file or sample name")
    e.add_argument("--model", default="efficientnet_lite0")
    e.add_argument("--weights", default=None, help="state-dict file for torchvision models")
    e.add_argument("--method", default="neuron_mct", choices=METHODS)
    e.add_argument("--sparsity", type=float, default=0.7)
    e.add_argument("--scope", default="global", choices=SCOPES)
    e.add_argument("--target", type=int, default=None, help="class index (default: predicted)")
    e.add_argument("--out", default="pathway.png")
    sub.add_parser("samples", help="list the sample photos")
    from .batch.command import add_parsers

    add_parsers(sub)
    a = p.parse_args(argv)
    try:
        if a.cmd == "samples":
            from .models import sample_images

            print("\n".join(sample_images()))
            return 0
        if a.cmd in ("evaluate", "summarize"):
            from .batch import command

            return command.evaluate(a) if a.cmd == "evaluate" else command.summarize(a)
        return _explain(a)
    except CritpathError as err:
        print(f"critpath: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
