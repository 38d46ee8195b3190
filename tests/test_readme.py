"""README.md's commands run as they are written: its main command's `critpath` step,
every Python example (in order, in one namespace) and every `critpath` line of its shell
examples except `critpath demo` (a server; tests/browser/test_demo.py opens it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)


def _run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_main_command_explains_the_sample_photo(tmp_path):
    main = re.search(r"<!-- main-command -->\n```bash\n(.*?)\n```", README, re.S).group(1)
    steps = [s.strip() for s in main.split("&&")]
    assert steps[0].startswith("python3 -m venv .venv") and "pip install" in steps[1]
    # the venv and the install are this test run's own; the rest runs as written
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    rest = " && ".join(steps[2:])
    assert rest.startswith(".venv/bin/critpath explain")
    done = _run(rest, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pathway.png").stat().st_size > 10_000


def test_the_python_examples_run_in_order(tmp_path, monkeypatch):
    pytest.importorskip("captum")
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    blocks = _blocks("python")
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # the block's number says which example broke
            raise AssertionError(f"README python block {i + 1} failed: {err!r}\n{block}") from err
    assert (tmp_path / "view.png").is_file()
    desc = namespace["o"].interventions.describe()
    assert "drop channels" in desc, desc


def test_the_shell_examples_run(tmp_path):
    lines = [ln for block in _blocks("sh") for ln in block.splitlines()]
    commands = [ln.split("#")[0].strip() for ln in lines if ln.startswith("critpath ")]
    commands = [c for c in commands if not c.startswith("critpath demo")]
    assert any(c.startswith("critpath labs") for c in commands)
    for cmd in commands:
        done = _run(cmd, tmp_path)
        assert done.returncode == 0, f"{cmd}\n{done.stderr}"
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4
