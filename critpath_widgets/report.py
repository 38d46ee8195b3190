"""The one static figure of an explanation, for the CLI, reports and ``PathwayExplorer.save``.

The figure: the photo, the pathway gradient over it, the plain gradient over it (both
coloured exactly as the browser overlay paints them, see
:func:`critpath_widgets.widgets.colormaps.colorize`), and the contribution per site.
Every title names what it shows: the target class, and for the pathway gradient the
method, scope and sparsity.

matplotlib is imported on first use and drawn on a ``Figure`` with the Agg canvas
(pyplot's global state is never touched); no widget library is imported, so the CLI
stays free of ipywidgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .engine import Explanation, reduce_channels
from .methods import method_name
from .widgets.colormaps import colorize, lut, normalised_vmax

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colour of the contribution kept by the pathway (the layer chart, here and in the widget).
KEPT_COLOR = "#d95f02"
#: Colour of the contribution the pathway removed.
REMOVED_COLOR = "#c9c9c9"


@dataclass(frozen=True)
class MapStyle:
    """How a map is painted over the photo: the ``AttributionOverlay`` colour settings."""

    colormap: str = "RdBu_r"
    opacity: float = 0.6
    sign: str = "signed"
    clip_percentile: float = 99.5

    @classmethod
    def of(cls, overlay: Any) -> MapStyle:
        """The style an overlay widget (or anything with the same attributes) shows."""
        return cls(overlay.colormap, overlay.opacity, overlay.sign, overlay.clip_percentile)


def target_name(target: int, categories: Sequence[str] | None = None) -> str:
    """The class name of ``target`` (``"class i"`` without a name for it)."""
    if categories is not None and 0 <= target < len(categories):
        return str(categories[target])
    return f"class {target}"


def pathway_title(explanation: Explanation, name: str) -> str:
    """Title of the pathway-gradient map: target, method, scope and sparsity."""
    e = explanation
    return (
        f"pathway gradient of {name!r}\n"
        f"{method_name(e.method)}, {e.scope} scope, sparsity {float(e.sparsity):.2f}"
    )


def gradient_title(name: str) -> str:
    """Title of the plain-gradient map (it depends on the target only)."""
    return f"plain gradient of {name!r}\n(full network)"


def explanation_figure(
    image: Image.Image,
    explanation: Explanation,
    gradient: torch.Tensor | None = None,
    categories: list[str] | None = None,
    sample: int = 0,
    cmap: str = "RdBu_r",
    opacity: float = 0.6,
) -> Figure:
    """The figure of one sample: photo, pathway gradient, plain gradient, layer chart.

    ``gradient`` is the plain input gradient ``(N, C, H, W)`` (its panel is left out
    when ``None``); both maps are reduced with "max_abs" and painted with ``cmap`` and
    ``opacity`` in signed mode.
    """
    e = explanation
    style = MapStyle(colormap=cmap, opacity=opacity)
    pathway = e.saliency_map("max_abs")[sample]
    plain = reduce_channels(gradient)[sample] if gradient is not None else None
    return render_explanation(
        image,
        e,
        pathway,
        plain,
        name=target_name(int(e.target[sample]), categories),
        pathway_style=style,
        gradient_style=style,
        sample=sample,
    )


def render_explanation(
    image: Image.Image | np.ndarray | None,
    explanation: Explanation,
    pathway_map: Any,
    gradient_map: Any | None,
    *,
    name: str,
    pathway_style: MapStyle = MapStyle(),
    gradient_style: MapStyle = MapStyle(),
    selected_site: int = -1,
    sample: int = 0,
) -> Figure:
    """Draw the figure from (H, W) maps as given (the renderer behind every caller).

    ``name`` is the target's class name; ``selected_site`` (-1: none) is outlined in the
    layer chart.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = explanation
    maps = [(pathway_title(e, name), _as_map(pathway_map), pathway_style)]
    if gradient_map is not None:
        maps.append((gradient_title(name), _as_map(gradient_map), gradient_style))
    photo = None
    if image is not None:
        photo = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    fig = Figure(figsize=(4.3 * (1 + len(maps)), 8), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1 + len(maps), height_ratios=[3, 2])
    t = int(e.target[sample])
    ax = fig.add_subplot(grid[0, 0])
    if photo is not None:
        ax.imshow(photo)
    ax.set_title(f"photo; target {name!r}\n(logit {float(e.logits[sample, t]):.2f})", fontsize=10)
    ax.set_axis_off()
    for col, (title, values, style) in enumerate(maps, start=1):
        _draw_map(fig, fig.add_subplot(grid[0, col]), photo, values, title, style)
    ax = fig.add_subplot(grid[1, :])
    _draw_layer_chart(ax, e.layer_summary(sample), selected_site)
    ax.set_title(
        f"contribution per site: {method_name(e.method)}, {e.scope} scope, "
        f"sparsity {float(e.sparsity):.2f}",
        fontsize=10,
    )
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure to ``path`` (format from the suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _as_map(values: Any) -> np.ndarray:
    """A (H, W) float32 numpy array from a tensor or an array."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def _draw_map(
    fig: Figure,
    ax: Axes,
    photo: np.ndarray | None,
    values: np.ndarray,
    title: str,
    style: MapStyle,
) -> None:
    """Paint a map over the photo as the browser overlay does, with its colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    h, w = values.shape
    if photo is not None:
        ax.imshow(photo)
        h_img, w_img = photo.shape[:2]
    else:
        h_img, w_img = h, w
    if h * w == 0:
        return
    table = lut(style.colormap)
    vmax = normalised_vmax(values, style.sign, style.clip_percentile)
    rgba = colorize(values, table, style.sign, style.opacity, vmax=vmax)
    # the map is stretched over the photo (the browser scales it the same way)
    extent = (-0.5, w_img - 0.5, h_img - 0.5, -0.5)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    ax.set_xlim(-0.5, w_img - 0.5)
    ax.set_ylim(h_img - 0.5, -0.5)
    vmin = -vmax if style.sign == "signed" else 0.0
    cmap = ListedColormap(table[:, :3] / 255.0)
    sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02)
    clip = f"{style.clip_percentile:g}th percentile"
    bar.set_label(f"{style.sign} (clipped at the {clip})", fontsize=8)


def layer_bars(summary: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per site the contribution kept by the pathway and the part removed: the stacked
    bars of the layer chart (here and in the widget), whose height is the site's total."""
    kept = np.array([max(float(s.kept_total), 0.0) for s in summary])
    total = np.array([float(s.total) for s in summary])
    return kept, np.clip(total - kept, 0.0, None)


def _draw_layer_chart(ax: Axes, summary: Sequence[Any], selected_site: int) -> None:
    """One stacked bar per site: kept by the pathway, then removed (the widget's chart),
    each ticked with its human name."""
    from .engine.naming import site_labels  # here: only this function of the module uses it

    idx = np.arange(len(summary))
    kept, removed = layer_bars(summary)
    ax.bar(idx, kept, color=KEPT_COLOR, label="kept by the pathway")
    ax.bar(idx, removed, bottom=kept, color=REMOVED_COLOR, label="removed")
    if 0 <= selected_site < len(summary):
        i = selected_site
        ax.bar([i], [kept[i] + removed[i]], fill=False, edgecolor="black", linewidth=1.5)
    # human names ("block 3 · ReLU6 #2"): a LayerSummary fills them in, a bare list may not
    names = [s.name for s in summary]
    labels = [getattr(s, "label", "") for s in summary]
    if not all(labels):
        labels = site_labels(names, [getattr(s, "kind", "") for s in summary])
    ax.set_xticks(idx, labels, rotation=90, fontsize=6)
    ax.set_xlabel("site (call order)")
    ax.set_ylabel("contribution")
    ax.legend(loc="upper right", fontsize=8)


__all__ = [
    "KEPT_COLOR",
    "REMOVED_COLOR",
    "MapStyle",
    "explanation_figure",
    "gradient_title",
    "layer_bars",
    "pathway_title",
    "render_explanation",
    "save_figure",
    "target_name",
]


#: the public name of the map renderer (see the readable-maps branch)
draw_map = _draw_map
