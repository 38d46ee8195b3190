"""The one figure renderer (report.render_explanation) behind the CLI, reports and
PathwayExplorer.save: titles say what each map is, files are written, no widget import.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import critpath_widgets
from critpath_widgets import report
from critpath_widgets.engine import PathwayExplainer
from critpath_widgets.models import ModelBundle

from . import small_explorer as small

CATEGORIES = [f"kind{i}" for i in range(10)]


_preprocess = small.preprocess


_photo = small.photo


@pytest.fixture(scope="module")
def model():
    return small.resnet()


@pytest.fixture
def figures(monkeypatch):
    """Every figure render_explanation draws, in order."""
    drawn = []
    render = report.render_explanation

    def spy(*args, **kwargs):
        fig = render(*args, **kwargs)
        drawn.append(fig)
        return fig

    monkeypatch.setattr(report, "render_explanation", spy)
    return drawn


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _assert_titles(fig, method_name: str, scope: str, sparsity: float, target: str) -> None:
    titles = _titles(fig)
    pathway = next(t for t in titles if t.startswith("pathway gradient"))
    plain = next(t for t in titles if t.startswith("plain gradient"))
    for part in (method_name, f"{scope} scope", f"sparsity {sparsity:.2f}", repr(target)):
        assert part in pathway, (part, pathway)
    assert repr(target) in plain and "sparsity" not in plain
    assert any(t.startswith("photo") and repr(target) in t for t in titles)


@pytest.mark.parametrize(
    ("method", "name", "scope"),
    [("random", "Random", "layer"), ("neuron_mct", "NeuronMCT", "global")],
)
def test_explanation_figure_titles_name_method_scope_sparsity_target(model, method, name, scope):
    x = _preprocess(_photo())[None]
    ex = PathwayExplainer(model)
    e = ex.explain(x, target=3, method=method, sparsity=0.55, scope=scope)
    fig = report.explanation_figure(_photo(), e, ex.gradient(x, e.target), CATEGORIES)
    _assert_titles(fig, name, scope, 0.55, "kind3")
    # without the plain gradient its panel is left out
    fig = report.explanation_figure(_photo(), e, None, CATEGORIES)
    assert not any(t.startswith("plain gradient") for t in _titles(fig))


def test_cli_draws_with_the_shared_renderer(model, monkeypatch, tmp_path, figures, capsys):
    from critpath_widgets import cli, models

    bundle = ModelBundle(
        model=model, preprocess=_preprocess, categories=CATEGORIES, name="tiny", crop=lambda im: im
    )
    monkeypatch.setattr(models, "load_model", lambda name, weights=None: bundle)
    photo = tmp_path / "photo.png"
    _photo(1).save(photo)
    out = tmp_path / "fig" / "cli.png"
    argv = ["explain", str(photo), "--method", "random", "--sparsity", "0.8", "--target", "2"]
    assert cli.main([*argv, "--scope", "layer", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out
    (fig,) = figures
    _assert_titles(fig, "Random", "layer", 0.80, "kind2")
    labels = [ax.get_xlabel() for ax in fig.axes if "clipped" in ax.get_xlabel()]
    assert len(labels) == 3 and all(x.startswith("absolute") and "blur" in x for x in labels)
    # --style raw: no display blur; --style signed: the diverging scale
    for style, first, blur in (("raw", "absolute", False), ("signed", "signed", False)):
        figures.clear()
        assert cli.main([*argv, "--out", str(out), "--style", style]) == 0
        labels = [ax.get_xlabel() for ax in figures[0].axes if "clipped" in ax.get_xlabel()]
        assert all(x.startswith(first) and ("blur" in x) == blur for x in labels), labels


def test_save_draws_what_the_explorer_shows(model, tmp_path, figures):
    w = critpath_widgets.PathwayExplorer(
        model, image=_photo(2), preprocess=_preprocess, categories=CATEGORIES, method="random"
    )
    try:
        w.wait(120)
        assert w.explanation is not None, w.message_text
        w.pathway_overlay.colormap = "viridis"
        w.pathway_overlay.sign = "positive"
        w.pathway_overlay.opacity = 0.9
        out = w.save(tmp_path / "view.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (fig,) = figures
        e = w.explanation
        _assert_titles(fig, "Random", e.scope, float(e.sparsity), w.category(w.target))
        # the pathway map (over the photo and alone) is painted with the overlay's
        # settings: "positive"; the plain gradient's overlay keeps its "signed" choice
        w.gradient_overlay.sign = "signed"
        figures.clear()
        w.save(tmp_path / "view2.png")
        (fig,) = figures
        bars = [ax for ax in fig.axes if "clipped" in ax.get_xlabel()]
        signs = [ax.get_xlabel().split(",")[0] for ax in bars]
        assert signs == ["positive", "positive", "signed"]
        assert bars[0].get_xlim()[0] == 0 and bars[2].get_xlim()[0] < 0
        assert "blur 0.5%" in bars[0].get_xlabel()  # the overlay's display blur
    finally:
        w.close()


def test_default_style_is_the_readable_one_and_the_overlay_default():
    from dataclasses import asdict

    from critpath_widgets.widgets.overlay import AttributionOverlay

    style = report.MapStyle()
    assert (style.colormap, style.sign, style.smooth > 0, style.photo_dim > 0) == (
        "inferno",
        "absolute",
        True,
        True,
    )
    ov = AttributionOverlay()
    assert report.MapStyle.of(ov) == style
    assert {k: getattr(ov, k) for k in asdict(style)} == asdict(style)
    signed = report.MapStyle.signed()
    assert (signed.colormap, signed.sign, signed.smooth, signed.photo_dim) == (
        "RdBu_r",
        "signed",
        0.0,
        0.0,
    )


def _figure_with_map(style, photo=True):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(1)
    values = rng.standard_normal((32, 32)).astype(np.float32)
    keep = values.copy()
    pic = np.asarray(_photo().resize((32, 32))) if photo else None
    report.draw_map(fig, ax, pic, values, "a map", style)
    np.testing.assert_array_equal(values, keep)  # display never changes the numbers
    return fig, ax, values, pic


def test_draw_map_paints_the_display_map_over_the_muted_photo():
    from critpath_widgets.widgets import colormaps as cm

    style = report.MapStyle()
    fig, ax, values, pic = _figure_with_map(style)
    photo_img, layer = ax.get_images()
    np.testing.assert_array_equal(photo_img.get_array(), cm.backdrop(pic, style.photo_dim))
    # the layer is colorize() of scipy's blur of |v| (an independent reference blur)
    from scipy.ndimage import gaussian_filter

    shown = gaussian_filter(np.abs(values), sigma=style.smooth * 32, mode="nearest")
    vmax = np.percentile(shown, style.clip_percentile)
    ref = cm.colorize(shown, cm.lut("inferno"), "absolute", style.opacity, vmax=vmax, gamma=2)
    np.testing.assert_allclose(np.asarray(layer.get_array()), ref, atol=1)
    assert ax.get_title() == "a map"


def test_draw_map_alone_is_opaque():
    fig, ax, values, _ = _figure_with_map(report.MapStyle(), photo=False)
    (layer,) = ax.get_images()
    assert (np.asarray(layer.get_array())[..., 3] == 255).all()


def test_figure_has_the_pathway_map_alone_and_a_signed_option(model):
    x = _preprocess(_photo())[None]
    ex = PathwayExplainer(model)
    e = ex.explain(x, target=1, method="neuron_mct", sparsity=0.5)
    fig = report.explanation_figure(_photo(), e, ex.gradient(x, e.target), CATEGORIES)
    titles = _titles(fig)
    alone = [t for t in titles if "(map alone)" in t]
    assert len(alone) == 1 and "NeuronMCT" in alone[0] and "'kind1'" in alone[0]
    fig = report.explanation_figure(_photo(), e, None, CATEGORIES, style=report.MapStyle.signed())
    bars = [ax for ax in fig.axes if "clipped" in ax.get_xlabel()]
    assert bars and all(ax.get_xlabel().startswith("signed") for ax in bars)


def test_cli_and_report_import_no_widget_library():
    code = (
        "import sys, critpath_widgets.cli, critpath_widgets.report; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'anywidget', "
        "'bqplot')]; assert not bad, bad; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
