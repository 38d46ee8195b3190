"""Batch evaluation: sharding, durable records and resume, skips, merge, summary, CLI,
and a torchrun run of 2 processes equal to a 1-process run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from critpath_widgets.batch import find_images, load_image, read_records, run_batch, shard
from critpath_widgets.batch.metrics import flatten, scalar
from critpath_widgets.batch.store import shard_path
from critpath_widgets.cli import main
from critpath_widgets.errors import CritpathError, InputError

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["m1", "m2"]


class Fake:
    """An evaluator whose fields depend on (file, method) only; counts its calls and can
    fail at the n-th evaluation, as a kill would stop a run."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.prepared: list[str] = []
        self.evaluated: list[tuple[str, str]] = []
        self.fail_at = fail_at

    def prepare(self, key: str) -> Any:
        self.prepared.append(key)
        return load_image(key).size

    def evaluate(self, size: Any, method: str) -> dict[str, Any]:
        if self.fail_at is not None and len(self.evaluated) == self.fail_at:
            raise RuntimeError("killed")
        key = self.prepared[-1]
        self.evaluated.append((key, method))
        return {"score": len(key) + 0.5 * METHODS.index(method), "width": size[0]}


def _folder(tmp_path: Path, n: int = 5, bad: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (8 + i, 8), (i * 40, 0, 0)).save(d / ("sub" if i % 2 else "") / f"{i}.png")
    for name in bad:
        (d / name).write_bytes(b"not an image")
    (d / "notes.txt").write_text("not picked up")
    return d


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 10])
def test_shard_covers_every_item_once(world: int, n: int) -> None:
    items = [f"img{i:02d}" for i in range(n)]
    shards = [shard(items, r, world) for r in range(world)]
    flat = [x for s in shards for x in s]
    assert sorted(flat) == items and len(flat) == n  # each exactly once, no padding
    assert all(x in shards[i % world] for i, x in enumerate(items))  # image i -> rank i % w
    with pytest.raises(ValueError):
        shard(items, world, world)


def test_find_images_recursive_sorted_and_errors(tmp_path: Path) -> None:
    d = _folder(tmp_path, 4)
    files = find_images([str(d), "coffee", str(d / "0.png")])
    assert files == sorted(files) and len(files) == 5 and "coffee" in files
    assert not any(f.endswith(".txt") for f in files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CritpathError, match="no images found"):
        find_images([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="neither a file"):
        find_images([str(tmp_path / "missing.png")])


def test_empty_folder_cli_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.jsonl"
    assert main(["evaluate", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no images found" in capsys.readouterr().err and not out.exists()


def test_run_writes_one_record_per_pair_in_order(tmp_path: Path) -> None:
    files = find_images([str(_folder(tmp_path))])
    out = tmp_path / "r.jsonl"
    res = run_batch(files, METHODS, Fake(), out, progress=False)
    recs = read_records(out)
    assert [(r["file"], r["method"]) for r in recs] == [(f, m) for f in files for m in METHODS]
    assert res.written == 10 and _strip(res.records) == _strip(recs)
    assert all(r["elapsed_s"] >= 0 for r in recs)


def test_resume_after_kill_and_torn_line(tmp_path: Path) -> None:
    files = find_images([str(_folder(tmp_path))])
    ref = tmp_path / "ref.jsonl"
    run_batch(files, METHODS, Fake(), ref, progress=False)
    want = _strip(read_records(ref))
    out = tmp_path / "r.jsonl"
    # a run stopped at its 4th pair keeps the 3 finished records
    with pytest.raises(RuntimeError, match="killed"):
        run_batch(files, METHODS, Fake(fail_at=3), out, progress=False)
    assert _strip(read_records(out)) == want[:3]
    # then a kill in the middle of writing the 4th: a torn line
    lines = ref.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:25])
    fake = Fake()
    run_batch(files, METHODS, fake, out, progress=False)
    assert fake.evaluated == [(r["file"], r["method"]) for r in want[3:]]  # nothing redone
    got = read_records(out)
    assert _strip(got) == want  # none lost, no duplicate, torn line gone
    assert out.read_text().count("\n") == len(want)
    # a finished run resumed does nothing
    fake = Fake()
    run_batch(files, METHODS, fake, out, progress=False)
    assert fake.prepared == [] and _strip(read_records(out)) == want


def test_torn_line_is_cut_only_with_repair(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"file": "a", "method": "m"}\n{"file": "b", "met')
    assert [r["file"] for r in read_records(p)] == ["a"]
    assert p.read_text().endswith('"met')
    read_records(p, repair=True)
    assert p.read_text() == '{"file": "a", "method": "m"}\n'


def test_stale_shards_are_resumed_and_merged(tmp_path: Path) -> None:
    """Shard files of an interrupted torchrun run count as done and end up merged."""
    files = find_images([str(_folder(tmp_path))])
    ref = tmp_path / "ref.jsonl"
    run_batch(files, METHODS, Fake(), ref, progress=False)
    lines = ref.read_text().splitlines(keepends=True)
    out = tmp_path / "r.jsonl"
    shard_path(out, 1).write_text("".join(lines[2::4]))
    shard_path(out, 3).write_text(lines[1] + lines[1][:10])  # with a torn line
    fake = Fake()
    run_batch(files, METHODS, fake, out, progress=False)
    assert len(fake.evaluated) == len(lines) - len(lines[2::4]) - 1
    assert _strip(read_records(out)) == _strip(read_records(ref))
    assert not shard_path(out, 1).exists() and not shard_path(out, 3).exists()


def test_unreadable_file_is_skipped_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _folder(tmp_path, 3, bad=("broken.png",))
    files = find_images([str(d)])
    out = tmp_path / "r.jsonl"
    with caplog.at_level(logging.WARNING, logger="critpath_widgets.batch"):
        res = run_batch(files, METHODS, Fake(), out, progress=False)
    bad = os.path.normpath(d / "broken.png")
    skips = [m for m in caplog.messages if "skipping" in m]
    assert len(skips) == 1 and bad in skips[0] and "cannot read" in skips[0]
    recs = read_records(out)
    assert res.skipped == 1 and len(recs) == 3 * 2 + 1
    skip = [r for r in recs if "skipped" in r]
    assert skip[0]["file"] == bad and "cannot read" in skip[0]["skipped"]
    fake = Fake()
    run_batch(files, METHODS, fake, out, progress=False)
    assert fake.prepared == []  # the skip record marks it done
    run_batch(files, METHODS, fake, out, progress=False, retry_skipped=True)
    assert fake.prepared == [bad] and len(read_records(out)) == 7


def test_summarize(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.jsonl"
    recs = [
        {"file": f"f{i}", "method": "m", "score": float(i), "target": 3, "label": "x"}
        for i in range(1, 5)
    ] + [{"file": "bad", "skipped": "cannot read"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["summarize", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 images, 4 (image, method) records, 1 skipped" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("m "))
    # mean 2.5, std (n-1) 1.291, median 2.5, IQR 3.25 - 1.75
    assert row == ["m", "score", "4", "2.5", "1.291", "2.5", "1.5"]
    assert "target" not in text
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["summarize", str(tmp_path / "empty.jsonl")]) == 2


def test_metric_fields_flatten() -> None:
    import numpy as np
    import torch

    class Result:
        def to_dict(self) -> dict:
            return {"logit": torch.tensor([0.25]), "curve": np.array([1.0, float("nan")])}

    assert flatten("retained", Result()) == {"retained_logit": 0.25, "retained_curve": [1.0, None]}
    assert scalar(np.float32(0.5)) == 0.5 and scalar([3]) == 3


def _cli(tmp: Path, out: str, nproc: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["evaluate", "coffee", "chelsea", "rocket", "--methods", "gradient,pathway_mct"]
    args += ["--metrics", "map", "--out", out, "--no-progress"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "critpath_widgets", *args]
    else:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, "--nproc-per-node", str(nproc), "-m", "critpath_widgets", *args]
    p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pathway_mct  map_top10_share" in p.stdout
    return read_records(tmp / out)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    one = _cli(tmp_path, "one.jsonl", 1)
    two = _cli(tmp_path, "two.jsonl", 2)
    assert [(r["file"], r["method"]) for r in two] == [(r["file"], r["method"]) for r in one]
    assert len(one) == 6 and not list(tmp_path.glob("two.jsonl.rank*"))
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for k in a.keys() - {"elapsed_s"}:
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], abs=1e-6, rel=1e-6), k
            else:
                assert a[k] == b[k], k


def test_resume_refuses_another_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"file": "coffee", "method": "gradient", "model": "resnet50"}) + "\n")
    assert main(["evaluate", "coffee", "--out", str(out)]) == 2
    assert "holds results of model 'resnet50'" in capsys.readouterr().err


def test_maps_with_and_without_the_attribution_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps come from attribute() where installed, else from the engine directly."""
    import torch
    from torch import nn

    from critpath_widgets import PathwayExplainer
    from critpath_widgets.batch import metrics as M

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).eval()
    ex, x = PathwayExplainer(model), torch.randn(1, 3, 8, 8)
    want = {"gradient": ex.gradient(x, 2), "pathway_mct": ex.explain(x, 2).saliency}
    for api in (M._attribution(), None):
        monkeypatch.setattr(M, "_attribution", lambda api=api: api)
        for method, w in want.items():
            got = M.Pair(model, ex, x, 2, method).saliency()
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-7)
        assert "gradient" in M.available_methods()
    from critpath_widgets.engine import METHODS

    if "dgr" not in METHODS:  # refused before any image, not at the first pair
        with pytest.raises(CritpathError, match="lacks"):
            M.check(["pathway_dgr"], ["map"])
    with pytest.raises(CritpathError, match="unknown metric"):
        M.check(["gradient"], ["nope"])
