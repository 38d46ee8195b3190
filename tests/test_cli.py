"""``critpath explain``: its options (-o, --sites, --target, --json), and every user
mistake told in one line on stderr with exit code 2, before the model loads when the
arguments alone show it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from critpath_widgets import cli, models, report
from critpath_widgets.engine import PathwayExplainer
from critpath_widgets.models import ModelBundle

CATEGORIES = [f"kind{i}" for i in range(8)] + ["tabby cat", "tiger cat"]


def _preprocess(im: Image.Image) -> torch.Tensor:
    arr = np.array(im.convert("RGB").resize((64, 64)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


@pytest.fixture(scope="module")
def tiny() -> ModelBundle:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    return ModelBundle(model, _preprocess, CATEGORIES, "tiny", crop=lambda im: im)


@pytest.fixture(scope="module")
def default_bundle() -> ModelBundle:
    return models.load_model()


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB").save(p)
    return p


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the model loads."""

    def fail(*args, **kwargs):
        pytest.fail("the model loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", fail)


def _use(monkeypatch, bundle: ModelBundle) -> None:
    monkeypatch.setattr(models, "load_model", lambda name, weights=None: bundle)


def _run(argv: list[str]) -> int:
    """``critpath`` in-process: its exit code, from a return or a SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def _assert_one_line_error(capsys, rc: int, *parts: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("critpath: error:"), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["missing.jpg"], "neither an image file nor a sample name"),
        (["{notimage}"], "cannot read"),
        (["coffee", "-o", "{tmp}/fig.xyz"], "figure format"),
        (["coffee", "-o", "{tmp}"], "is a folder"),
        (["coffee", "-o", "{photo}/x.png"], "is not a folder"),
        (["coffee", "--sparsity", "1"], "--sparsity"),
        (["coffee", "--sparsity", "-0.1"], "--sparsity"),
        (["coffee", "--sparsity", "abc"], "--sparsity"),
        (["coffee", "--method", "nope"], "--method"),
        (["coffee", "--target", "-1"], "--target -1"),
        (["coffee", "--sites", "Relu"], "Relu"),
        (["coffee", "--sites", "F.nope"], "F.nope"),
        (["coffee", "--sites", ","], "--sites"),
        (["coffee", "--model", "nomodel"], "nomodel"),
        (["coffee", "--model", "resnet18", "--weights", "{tmp}/none.pt"], "not found"),
        (["coffee", "--weights", "{tmp}/none.pt"], "--weights random"),
    ],
)
def test_argument_mistakes_are_one_line_before_the_model_loads(
    args, part, tmp_path, photo, no_load, capsys
):
    (tmp_path / "notimage.png").write_text("not an image")
    fill = {"tmp": tmp_path, "photo": photo, "notimage": tmp_path / "notimage.png"}
    argv = ["explain", *[a.format(**fill) for a in args]]
    _assert_one_line_error(capsys, _run(argv), part)


@pytest.mark.parametrize(("command", "out"), [("explain", "x.png"), ("evaluate", "r.jsonl")])
def test_unwritable_out_folder(command, out, monkeypatch, tmp_path, no_load, capsys):
    monkeypatch.setattr(cli.os, "access", lambda *a, **k: False)
    rc = _run([command, "coffee", "-o", str(tmp_path / out)])
    _assert_one_line_error(capsys, rc, "not writable")


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["--target", "10"], "0..9"),
        (["--target", "zebra"], "not a class name"),
        (["--target", "cat"], "several classes: 8 'tabby cat', 9 'tiger cat'"),
        (["--sites", "layer1.9.relu"], "layer1.9.relu"),
        (["--sites", "GELU"], "activation types: ReLU"),
    ],
)
def test_mistakes_found_after_loading_are_one_line(
    args, part, tiny, monkeypatch, photo, tmp_path, capsys
):
    _use(monkeypatch, tiny)
    rc = _run(["explain", str(photo), "-o", str(tmp_path / "x.png"), *args])
    _assert_one_line_error(capsys, rc, part)


def test_write_failure_is_one_line(tiny, monkeypatch, photo, tmp_path, capsys):
    _use(monkeypatch, tiny)

    def refuse(fig, path, dpi=120):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(report, "save_figure", refuse)
    rc = _run(["explain", str(photo), "-o", str(tmp_path / "x.png"), "--method", "random"])
    _assert_one_line_error(capsys, rc, "could not write", "Permission denied")


def test_offline_torchvision_hint_names_cli_flags(monkeypatch, photo, tmp_path, capsys):
    def offline(name, weights=None, **kwargs):
        if weights is not None:
            raise OSError("no network")
        return torchvision.models.resnet18(num_classes=10)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    rc = _run(["explain", str(photo), "--model", "resnet18", "-o", str(tmp_path / "x.png")])
    line = _assert_one_line_error(capsys, rc, "--weights PATH", "--weights random")
    assert "weights=" not in line


def test_short_out_and_target_by_name(tiny, monkeypatch, photo, tmp_path, capsys):
    _use(monkeypatch, tiny)
    out = tmp_path / "new" / "fig.png"
    assert cli.main(["explain", str(photo), "-o", str(out), "--target", "TABBY"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "explained 'tabby cat'" in text and f"wrote {out}" in text


def _json(argv: list[str], capsys) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_equals_the_python_explanation_and_sites_relu6_is_the_default(
    default_bundle, monkeypatch, tmp_path, capsys
):
    _use(monkeypatch, default_bundle)
    out = tmp_path / "fig.svg"
    rec = _json(["explain", "coffee", "--json", "-o", str(out), "--sparsity", "0.8"], capsys)
    assert out.is_file() and rec["out"] == str(out)
    x = default_bundle.preprocess(models.sample_image("coffee"))[None]
    e = PathwayExplainer(default_bundle.model).explain(x, sparsity=0.8)
    t = int(e.target[0])
    probs = e.logits.softmax(dim=1)[0].topk(5)
    assert rec["model"] == "efficientnet_lite0" and rec["image"] == "coffee"
    assert rec["target"] == t and rec["target_name"] == default_bundle.categories[t]
    assert [r["index"] for r in rec["top5"]] == probs.indices.tolist()
    assert [r["prob"] for r in rec["top5"]] == pytest.approx(probs.values.tolist(), abs=1e-5)
    assert (rec["method"], rec["sparsity"], rec["scope"]) == ("neuron_mct", 0.8, "global")
    assert rec["kept"] == int(e.pathway.kept[0]) and rec["neurons"] == e.pathway.neurons
    assert rec["logit"] == pytest.approx(float(e.logits[0, t]), abs=1e-4)
    assert rec["pathway_logit"] == pytest.approx(float(e.pathway_logits[0, t]), abs=1e-4)
    assert rec["seconds"] > 0
    argv = ["explain", "coffee", "--json", "-o", str(out), "--sparsity", "0.8"]
    same = _json([*argv, "--sites", "ReLU6"], capsys)
    for key in ("target", "kept", "neurons", "logit", "pathway_logit", "top5"):
        assert same[key] == rec[key], key


def test_help_has_examples_and_help_on_every_option(capsys):
    assert _run(["explain", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "critpath explain coffee -o pathway.png" in text
    for flag in ("-o OUT, --out OUT", "--sites", "--target NAME|INDEX", "--json", "--model"):
        assert flag in text
    sub = next(a for a in cli.build_parser()._actions if a.dest == "cmd")
    bare = [a.dest for a in sub.choices["explain"]._actions if not a.help]
    assert not bare, bare


# ------------------------------------------------------------------ critpath evaluate
@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["missing.jpg"], "neither a file, a folder nor a sample name"),
        (["{empty}"], "no images found"),
        (["coffee", "--target", "-1"], "--target -1"),
        (["coffee", "--target", " "], "--target needs"),
        (["coffee", "-o", "{tmp}"], "is a folder"),
        (["coffee", "-o", "{photo}/r.jsonl"], "is not a folder"),
        (["coffee", "--steps", "0"], "--steps"),
        (["coffee", "--steps", "abc"], "--steps"),
        (["coffee", "--methods", "nope"], "unknown or unavailable method 'nope'"),
        (["coffee", "--methods", ","], "at least one"),
        (["coffee", "--metrics", "nope"], "unknown metric 'nope'"),
        (["coffee", "--model", "nomodel"], "nomodel"),
        (["coffee", "--model", "resnet18", "--weights", "{tmp}/none.pt"], "not found"),
        (["coffee", "--weights", "{tmp}/none.pt"], "--weights random"),
        (["coffee", "--device", "toaster"], "--device toaster"),
        (["coffee", "--dist-timeout", "0"], "--dist-timeout"),
    ],
)
def test_evaluate_argument_mistakes_are_one_line_before_the_model_loads(
    args, part, tmp_path, photo, no_load, capsys
):
    (tmp_path / "empty").mkdir()
    fill = {"tmp": tmp_path, "photo": photo, "empty": tmp_path / "empty"}
    argv = ["evaluate", *[a.format(**fill) for a in args]]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "r.jsonl")]
    _assert_one_line_error(capsys, _run(argv), part)
    assert not (tmp_path / "r.jsonl").exists()


def test_evaluate_cuda_without_cuda_is_one_line(monkeypatch, tmp_path, no_load, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = _run(["evaluate", "coffee", "--device", "cuda", "-o", str(tmp_path / "r.jsonl")])
    _assert_one_line_error(capsys, rc, "no CUDA device", "--device cpu")


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["--target", "10"], "0..9"),
        (["--target", "zebra"], "not a class name"),
        (["--target", "cat"], "several classes: 8 'tabby cat', 9 'tiger cat'"),
    ],
)
def test_evaluate_target_mistakes_found_after_loading_are_one_line(
    args, part, tiny, monkeypatch, photo, tmp_path, capsys
):
    _use(monkeypatch, tiny)
    rc = _run(["evaluate", str(photo), "-o", str(tmp_path / "r.jsonl"), "--no-progress", *args])
    _assert_one_line_error(capsys, rc, part)


def test_evaluate_target_by_name_and_index(tiny, monkeypatch, photo, tmp_path, capsys):
    from critpath_widgets.batch.store import read_records

    _use(monkeypatch, tiny)
    for spec, out in (("TABBY", "a.jsonl"), ("9", "b.jsonl")):
        argv = ["evaluate", str(photo), "--methods", "gradient", "--metrics", "map"]
        assert cli.main([*argv, "--target", spec, "-o", str(tmp_path / out), "--no-progress"]) == 0
    (a,), (b,) = read_records(tmp_path / "a.jsonl"), read_records(tmp_path / "b.jsonl")
    assert (a["target"], a["label"]) == (8, "tabby cat")
    assert (b["target"], b["label"]) == (9, "tiger cat")


def test_evaluate_offline_hint_names_cli_flags(monkeypatch, photo, tmp_path, capsys):
    def offline(name, weights=None, **kwargs):
        if weights is not None:
            raise OSError("no network")
        return torchvision.models.resnet18(num_classes=10)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    rc = _run(["evaluate", str(photo), "--model", "resnet18", "-o", str(tmp_path / "r.jsonl")])
    line = _assert_one_line_error(capsys, rc, "--weights PATH", "--weights random")
    assert "weights=" not in line


def test_summarize_missing_file_is_one_line(tmp_path, capsys):
    rc = _run(["summarize", str(tmp_path / "none.jsonl")])
    _assert_one_line_error(capsys, rc, "no such results file")


def test_evaluate_help_has_examples_and_help_on_every_option(capsys):
    assert _run(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "critpath evaluate photos/" in text
    assert "--target NAME|INDEX" in text and "-o OUT, --out OUT" in text
    sub = next(a for a in cli.build_parser()._actions if a.dest == "cmd")
    for name in ("evaluate", "summarize"):
        bare = [a.dest for a in sub.choices[name]._actions if not a.help]
        assert not bare, (name, bare)
