"""Command line: explain a photo with its critical pathway and write the figure to a file.

critpath explain coffee -o pathway.png
critpath explain my_photo.jpg --method neuron_intgrad --sparsity 0.9
critpath evaluate photos/ --methods gradient,pathway_mct --metrics deletion --out results.jsonl
critpath summarize results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from .engine import METHODS, SCOPES
from .errors import CritpathError, InputError, WeightsDownloadError
from .methods import LONG_METHODS

EXPLAIN_EXAMPLES = """\
examples:
  critpath explain coffee -o pathway.png
  critpath explain my_photo.jpg --method neuron_intgrad --sparsity 0.9 -o photo.pdf
  critpath explain chelsea --target "tabby" --scope layer --json
  critpath explain coffee --sites ReLU6,F.relu
  critpath explain coffee --compare -o compare.png   # methods side by side
  critpath explain coffee --compare pathway_mct,pathway_random,gradcam
  critpath explain coffee --model resnet18 --weights resnet18.pth
  critpath explain coffee --model resnet18 --weights random   # offline, untrained
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``critpath: error: ...`` and a pointer to --help, then exit 2."""
        self.exit(2, f"critpath: error: {message} (see {self.prog} --help)\n")


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


def check_out(out: str) -> Path:
    """The figure path, if matplotlib can write its format and its folder is writable."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(out)
    if path.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {path / 'x.png'}")
    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = path.suffix.lower().lstrip(".")
    if ext not in kinds:
        raise InputError(
            f"--out {out}: the file name must end in a figure format ({', '.join(sorted(kinds))})"
        )
    check_writable(out, path)  # save_figure creates missing folders
    return path


def check_writable(out: str, path: Path) -> None:
    """InputError unless ``path`` can be written: the nearest existing folder above it
    takes a new file (missing folders are created by the writer), and an existing file
    is writable."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"--out {out}: {folder} is not a folder")
    try:  # os.access says yes to root on a read-only file system; a probe file does not
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError
        with tempfile.TemporaryFile(dir=folder):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError
    except OSError:
        where = path if path.exists() else f"the folder {folder}"
        raise InputError(f"--out {out}: {where} is not writable") from None


def parse_sites(spec: str | None) -> list[Any] | None:
    """``--sites``: module types of torch.nn (ReLU), functions (F.relu) or module names."""
    if spec is None:
        return None
    import torch.nn.functional as F
    from torch import nn

    from .engine.functional import FUNCTION_KINDS

    entries = [s.strip() for s in spec.split(",") if s.strip()]
    if not entries:
        raise InputError("--sites needs at least one entry, such as ReLU or F.relu")
    sites: list[Any] = []
    for s in entries:
        if s.startswith("F."):
            f = getattr(F, s[2:], None)
            if f is None or f not in FUNCTION_KINDS:
                known = sorted({f"F.{k}" for k in FUNCTION_KINDS.values()})
                raise InputError(f"--sites: {s} is not an activation function ({', '.join(known)})")
            sites.append(f)
            continue
        t = getattr(nn, s, None)
        if isinstance(t, type) and issubclass(t, nn.Module):
            sites.append(t)
        elif s[0].isupper():
            raise InputError(f"--sites: {s} is not a module type of torch.nn (say ReLU, GELU)")
        else:
            sites.append(s)  # a module name, looked up in the model once it is loaded
    return sites


def parse_target(spec: str | None) -> int | str | None:
    """``--target``: a class index (int) or a class name (str, matched after loading)."""
    if spec is None:
        return None
    try:
        index = int(spec)
    except ValueError:
        if not spec.strip():
            raise InputError("--target needs a class index or name") from None
        return spec.strip()
    if index < 0:
        raise InputError(f"--target {index}: a class index is 0 or more")
    return index


def resolve_target(target: int | str | None, categories: list[str]) -> int | None:
    """The class index of ``--target``: index in range, or a name matched exactly or as
    the one class name containing it (case-insensitive)."""
    if target is None:
        return None
    n = len(categories)
    if isinstance(target, int):
        if target >= n:
            raise InputError(f"--target {target} is not a class index of the model (0..{n - 1})")
        return target
    from .classes import match_class

    found, close = match_class(target, categories)
    if len(found) == 1:
        return found[0]
    if not found:
        hint = ", ".join(f"{i} {categories[i]!r}" for i in close)
        raise InputError(
            f"--target {target!r} is not a class name of the model"
            + (f"; close: {hint}" if hint else "")
        )
    shown = ", ".join(f"{i} {categories[i]!r}" for i in found[:5])
    more = f", ... ({len(found)} in all)" if len(found) > 5 else ""
    raise InputError(f"--target {target!r} matches several classes: {shown}{more}")


def _check_model(model: str, weights: str | None) -> None:
    """Model name and ``--weights`` checked before anything loads."""
    import torchvision

    lite = model in ("efficientnet_lite0", "efficientnet-lite0")
    if lite and weights not in (None, "random"):
        raise InputError(
            "efficientnet_lite0 ships its weights: leave out --weights (or --weights random)"
        )
    if not lite and model not in torchvision.models.list_models(module=torchvision.models):
        raise InputError(
            f"unknown --model {model!r}: use efficientnet_lite0 or a torchvision "
            "classification model such as resnet50, vgg16, mobilenet_v2"
        )
    if weights not in (None, "random") and not Path(weights).is_file():
        raise InputError(f"--weights {weights}: file not found")


def _load(model: str, weights: str | None):
    """The model bundle; torchvision's failed download told as CLI flags."""
    from . import models

    try:
        return models.load_model(model, weights=weights)
    except WeightsDownloadError as e:
        raise InputError(
            f"could not download torchvision's weights for {model} ({e.reason}); offline, "
            "pass --weights PATH (a saved state dict) or --weights random (untrained)"
        ) from e


def _explainer(model: Any, sites: list[Any] | None, spec: str | None) -> Any:
    """The explainer on ``--sites``; a choice without sites in the model told as a flag."""
    from .engine import PathwayExplainer
    from .engine.site_spec import activation_types_in
    from .errors import ModelError

    try:
        return PathwayExplainer(model, sites=sites)
    except ModelError as e:
        if sites is None or "no recordable sites" not in str(e):
            raise
        acts = ", ".join(activation_types_in(model)) or "none"
        raise InputError(
            f"--sites {spec}: no such sites in the model (its activation types: {acts})"
        ) from e


def _explain(a: argparse.Namespace) -> int:
    from .report import STYLES, explanation_figure, save_figure

    # every argument and path is checked before the model loads
    if not 0.0 <= a.sparsity < 1.0:
        raise InputError(f"--sparsity must be in [0, 1), got {a.sparsity}")
    target = parse_target(a.target)
    sites = parse_sites(a.sites)
    compare = parse_compare(a.compare)
    out = check_out(a.out)
    _check_model(a.model, a.weights)
    image = _load_image(a.image)

    bundle = _load(a.model, a.weights)
    t = resolve_target(target, bundle.categories)
    x = bundle.preprocess(image)[None]
    ex = _explainer(bundle.model, sites, a.sites)
    if compare is not None:
        return _compare(a, compare, bundle, image, x, t, ex, out)
    opts = {"progress": True} if a.method in LONG_METHODS else {}
    t0 = time.perf_counter()
    e = ex.explain(x, target=t, method=a.method, sparsity=a.sparsity, scope=a.scope, **opts)
    dt = time.perf_counter() - t0
    g = ex.gradient(x, e.target)
    probs = e.logits.softmax(dim=1)[0]
    top = probs.topk(min(5, probs.numel()))
    t = int(e.target[0])
    kept = int(e.pathway.kept[0])
    fig = explanation_figure(bundle.crop(image), e, g, bundle.categories, style=STYLES[a.style])
    try:
        written = save_figure(fig, out)
    except OSError as err:
        raise InputError(f"could not write {out}: {err.strerror or err}") from err
    if a.json:
        record = {
            "model": bundle.name,
            "image": a.image,
            "target": t,
            "target_name": bundle.categories[t],
            "top5": [
                {"index": i, "name": bundle.categories[i], "prob": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ],
            "method": a.method,
            "sparsity": a.sparsity,
            "scope": a.scope,
            "kept": kept,
            "neurons": int(e.pathway.neurons),
            "logit": float(e.logits[0, t]),
            "pathway_logit": float(e.pathway_logits[0, t]),
            "seconds": dt,
            "style": a.style,
            "out": str(written),
        }
        print(json.dumps(record))
        return 0
    print(f"model {bundle.name}, image {a.image}")
    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {p:6.3f}  {bundle.categories[i]}")
    print(
        f"explained {bundle.categories[t]!r} with {a.method} in {dt:.2f} s: pathway keeps "
        f"{kept:,} of {e.pathway.neurons:,} neurons ({a.scope}); target logit "
        f"{float(e.logits[0, t]):.2f} -> {float(e.pathway_logits[0, t]):.2f} on the pathway"
    )
    print(f"wrote {written}")
    return 0


def _add_explain(sub: Any) -> None:
    """The explain subcommand, on the CLI's subparsers."""
    e = sub.add_parser(
        "explain",
        help="explain an image and write a figure",
        description="Explain a classifier's answer on one image by its critical pathway,\n"
        "print the top classes and the pathway's numbers, and write the figure.",
        epilog=EXPLAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("image", nargs="?", default="coffee", help="image file or sample name")
    add_model_options(e)
    e.add_argument(
        "--method",
        default="neuron_mct",
        choices=METHODS,
        help="how neurons are scored (default neuron_mct)",
    )
    e.add_argument(
        "--sparsity",
        type=float,
        default=0.7,
        help="share of neurons removed from the pathway, in [0, 1) (default 0.7)",
    )
    e.add_argument(
        "--scope",
        default="global",
        choices=SCOPES,
        help="global: one threshold over all sites; layer: the same share per site",
    )
    e.add_argument(
        "--target",
        default=None,
        metavar="NAME|INDEX",
        help="class to explain: index or (part of) a class name (default: predicted)",
    )
    e.add_argument(
        "--sites",
        default=None,
        help="comma-separated sites: torch.nn types (ReLU,GELU), module names or "
        "functions (F.relu) (default: the activations)",
    )
    e.add_argument(
        "-o",
        "--out",
        default="pathway.png",
        help="figure file, format from the suffix (default pathway.png)",
    )
    e.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    e.add_argument(
        "--compare",
        nargs="?",
        const="",
        default=None,
        metavar="METHODS",
        help="draw several methods side by side instead (--method is then unused): "
        "comma-separated attribution methods, e.g. pathway_mct,pathway_random,gradient "
        "(default: NeuronMCT, NeuronIntGrad, random pathways and the plain gradient)",
    )
    e.add_argument(
        "--style",
        default="readable",
        choices=("readable", "raw", "signed"),
        help="how the maps are painted: readable = magnitude as heat over a muted photo with "
        "a light display-only blur; raw = the same without blur; signed = diverging "
        "RdBu_r of the signed values (default readable; the numbers never change)",
    )


def parse_compare(spec: str | None) -> list[str] | None:
    """``--compare``'s methods (None: no comparison; [] the default set), checked
    before the model loads."""
    if spec is None:
        return None
    from .comparison import canonical_method

    names = [s.strip() for s in spec.split(",") if s.strip()]
    try:
        return [canonical_method(n) for n in names]
    except CritpathError as e:
        raise InputError(f"--compare: {e}") from e


def _compare(
    a: argparse.Namespace,
    methods: list[str],
    bundle: Any,
    image: Any,
    x: Any,
    target: int | None,
    explainer: Any,
    out: Path,
) -> int:
    """``explain --compare``: each method's map side by side, with its target logit."""
    from .comparison import compare_methods, comparison_figure
    from .report import save_figure

    c = compare_methods(
        explainer, x, target, methods or None, a.sparsity, a.scope, progress=_stage()
    )
    fig = comparison_figure(bundle.crop(image), c, bundle.categories)
    try:
        written = save_figure(fig, out)
    except OSError as err:
        raise InputError(f"could not write {out}: {err.strerror or err}") from err
    if a.json:
        record = {"model": bundle.name, "image": a.image, **c.to_dict(), "out": str(written)}
        print(json.dumps({**record, "target_name": bundle.categories[c.target]}))
        return 0
    print(f"model {bundle.name}, image {a.image}; target {bundle.categories[c.target]!r}")
    for m, r in c.results.items():
        print(f"  {r.name:32s} {c.logit_text(m)} ({r.seconds:.1f} s)")
    print(f"wrote {written}")
    return 0


def _stage() -> Any:
    """A progress callback printing each method as it starts (on stderr)."""
    last = [-1]

    def progress(done: int, total: int) -> None:
        if done != last[0] and done < total:
            last[0] = done
            print(f"comparing: method {done + 1} of {total}", file=sys.stderr, flush=True)

    return progress


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--weights``, the same for every sub-command."""
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (offline ImageNet weights) or a torchvision model name",
    )
    parser.add_argument(
        "--weights",
        default=None,
        metavar="PATH|random",
        help="state-dict file for torchvision models, or 'random' for untrained weights "
        "(default: the model's pretrained weights)",
    )


def _add_labs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "labs",
        help="write the lab notebooks (student versions; --instructor: with solutions)",
        description="Write the four lab notebooks into DIR: the student versions (exercises "
        "to answer, checked live by critpath_widgets.labs) or, with --instructor, the "
        "versions with the solutions. Both come from the same source notebooks.",
    )
    p.add_argument("dir", metavar="DIR", help="folder to write into (created if missing)")
    p.add_argument("--instructor", action="store_true", help="include the solutions")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already there")


def _labs(a: argparse.Namespace) -> int:
    from .labs import NOTEBOOKS, write_labs

    dest = Path(a.dir)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} exists and is not a folder")
    there = [n for n in NOTEBOOKS if (dest / n).exists()]
    if there and not a.force:
        raise InputError(f"{dest} already holds {', '.join(there)}; use --force to overwrite")
    try:
        written = write_labs(dest, instructor=a.instructor)
    except OSError as err:
        raise InputError(f"cannot write the labs into {dest}: {err.strerror or err}") from None
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``critpath`` parser with its subcommands."""
    p = _Parser(prog="critpath", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_explain(sub)
    sub.add_parser("samples", help="list the sample photos")
    _add_labs(sub)
    from .batch.command import add_parsers

    add_parsers(sub)
    from .demo import add_parser as add_demo

    add_demo(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``critpath`` command."""
    a = build_parser().parse_args(argv)
    try:
        if a.cmd == "samples":
            from .models import sample_images

            print("\n".join(sample_images()))
            return 0
        if a.cmd == "labs":
            return _labs(a)
        if a.cmd == "demo":
            from . import demo

            return demo.command(a)
        if a.cmd in ("evaluate", "summarize"):
            from .batch import command

            return command.evaluate(a) if a.cmd == "evaluate" else command.summarize(a)
        return _explain(a)
    except CritpathError as err:
        print(f"critpath: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
