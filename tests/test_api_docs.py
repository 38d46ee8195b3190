"""The API reference: every public name is documented, and docs/api.md is up to date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE_API = ROOT / "docs" / "make_api.py"


@pytest.fixture(scope="module")
def make_api():
    """docs/make_api.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_api", MAKE_API)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_api"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("make_api", None)


@pytest.fixture(scope="module")
def sections(make_api):
    return make_api.collect()


def test_every_public_name_has_a_docstring(make_api, sections):
    documented = list(make_api.iter_documented(sections))
    missing = [qual for qual, doc in documented if not doc.strip()]
    assert len(documented) > 200, "the reference lost most of the public API"
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_reference_covers_the_lazy_widgets_and_their_traits(sections):
    names = {f"{e.module}.{e.name}": e for _m, _d, entries in sections for e in entries}
    for widget in ("PathwayExplorer", "AttributionOverlay", "LayerContributions"):
        assert names[f"critpath_widgets.{widget}"].kind == "class"
    explorer = {m.name: m for m in names["critpath_widgets.PathwayExplorer"].members}
    assert explorer["sparsity"].kind == "trait"
    assert "fraction removed" in explorer["sparsity"].doc  # the trait's help=
    assert explorer["explanation"].kind == "property"
    assert names["critpath_widgets.evaluation.Jaccard"].anchor != (
        names["critpath_widgets.evaluation.jaccard"].anchor
    )
    assert names["critpath_widgets.InputError"].see == "critpath_widgets.errors.InputError"


def test_api_md_is_up_to_date(make_api):
    current = make_api.API_MD.read_text(encoding="utf-8") if make_api.API_MD.exists() else ""
    assert current == make_api.generate(), (
        "docs/api.md does not match the docstrings; run `python docs/make_api.py` "
        "and commit docs/api.md"
    )
    assert " at 0x" not in current


def test_check_flag_reports_a_stale_reference(make_api, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "api.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(make_api, "API_MD", stale)
    monkeypatch.setattr(make_api, "ROOT", tmp_path)
    assert make_api.main(["--check"]) == 1
    assert "python docs/make_api.py" in capsys.readouterr().err
    assert make_api.main([]) == 0
    assert make_api.main(["--check"]) == 0


@pytest.mark.slow
def test_script_runs_from_the_command_line():
    result = subprocess.run(
        [sys.executable, str(MAKE_API), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
