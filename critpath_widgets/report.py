"""The one static figure of an explanation, for the CLI, reports and ``PathwayExplorer.save``.

The figure: the photo, the pathway gradient over it and alone, the plain gradient over
it (all coloured exactly as the browser overlay paints them, see :func:`draw_map` and
:mod:`critpath_widgets.widgets.colormaps`), and the contribution per site. The default
:class:`MapStyle` is the readable one (smoothed magnitude as heat over a muted photo);
display smoothing never changes the numbers the engine returns.
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
from .widgets.colormaps import backdrop, colorize, display_map, lut, normalised_vmax

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colour of the contribution kept by the pathway (the layer chart, here and in the widget).
KEPT_COLOR = "#d95f02"
#: Colour of the contribution the pathway removed.
REMOVED_COLOR = "#c9c9c9"


@dataclass(frozen=True)
class MapStyle:
    """How a map is painted: the ``AttributionOverlay`` colour settings.

    The default is the readable style: the smoothed magnitude as a heat layer
    (inferno) whose opacity follows the magnitude, clipped at the 99th percentile,
    over a muted photo. :meth:`signed` is the diverging style (RdBu_r, raw values,
    unmuted photo). Smoothing and muting change the picture only, never the numbers.
    """

    #: matplotlib colormap name
    colormap: str = "inferno"
    #: opacity of the map over the photo, in [0, 1]
    opacity: float = 0.9
    #: which part of the map is shown: "signed", "positive", "negative" or "absolute"
    sign: str = "absolute"
    #: percentile of the shown nonzero magnitudes mapped to the end of the colour scale
    clip_percentile: float = 99.0
    #: sigma of the display-only Gaussian blur, as a share of the map's longer side
    smooth: float = 0.005
    #: how much the photo is greyed and darkened behind the map, in [0, 1]
    photo_dim: float = 0.6
    #: the heat layer's alpha follows magnitude ** gamma (1: linear)
    gamma: float = 2.0

    @classmethod
    def signed(cls) -> MapStyle:
        """The diverging style (the overlay's former default): RdBu_r, raw, photo as is."""
        return cls("RdBu_r", 0.6, "signed", 99.5, smooth=0.0, photo_dim=0.0, gamma=1.0)

    @classmethod
    def of(cls, overlay: Any) -> MapStyle:
        """The style an overlay widget (or anything with the same attributes) shows."""
        return cls(
            overlay.colormap,
            overlay.opacity,
            overlay.sign,
            overlay.clip_percentile,
            smooth=float(getattr(overlay, "smooth", 0.0)),
            photo_dim=float(getattr(overlay, "photo_dim", 0.0)),
            gamma=float(getattr(overlay, "gamma", 1.0)),
        )

    def describe(self) -> str:
        """One line saying how the map is drawn (the colour bar's caption)."""
        parts = [self.sign, f"clipped at {self.clip_percentile:g}th pct"]
        if self.smooth > 0:
            parts.append(f"display blur {self.smooth:.1%}")
        return ", ".join(parts)


#: Named styles (the CLI's ``--style``): the readable default, the same without the
#: display blur (raw pixels), and the diverging signed style.
STYLES: dict[str, MapStyle] = {
    "readable": MapStyle(),
    "raw": MapStyle(smooth=0.0),
    "signed": MapStyle.signed(),
}


def target_name(target: int, categories: Sequence[str] | None = None) -> str:
    """The class name of ``target`` (``"class i"`` without a name for it)."""
    if categories is not None and 0 <= target < len(categories):
        return str(categories[target])
    return f"class {target}"


def pathway_title(explanation: Explanation, name: str, sample: int = 0) -> str:
    """Title of the pathway-gradient map: target, method, scope, sparsity and the
    target's logit through the pathway (what tells a random pathway from a real one)."""
    e = explanation
    t = int(e.target[sample])
    return (
        f"pathway gradient of {name!r}\n"
        f"{method_name(e.method)}, {e.scope} scope,\n"  # 3 short lines: no overlap with a neighbour
        f"sparsity {float(e.sparsity):.2f}; pathway logit {float(e.pathway_logits[sample, t]):.2f}"
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
    style: MapStyle | None = None,
) -> Figure:
    """The figure of one sample: photo, pathway gradient (over the photo and alone),
    plain gradient, layer chart.

    ``gradient`` is the plain input gradient ``(N, C, H, W)`` (its panel is left out
    when ``None``); both maps are reduced with "max_abs" and painted with ``style``
    (default: the readable :class:`MapStyle`).
    """
    e = explanation
    style = MapStyle() if style is None else style
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
    map_alone: bool = True,
) -> Figure:
    """Draw the figure from (H, W) maps as given (the renderer behind every caller).

    ``name`` is the target's class name; ``selected_site`` (-1: none) is outlined in the
    layer chart; ``map_alone`` adds the pathway map without the photo beside it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = explanation
    photo = None
    if image is not None:
        photo = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    pathway = _as_map(pathway_map)
    # (title, values, style, over the photo?)
    title = pathway_title(e, name, sample)
    maps = [(title, pathway, pathway_style, True)]
    if map_alone:
        maps.append((title.replace("\n", " (map alone)\n", 1), pathway, pathway_style, False))
    if gradient_map is not None:
        maps.append((gradient_title(name), _as_map(gradient_map), gradient_style, True))
    fig = Figure(figsize=(4.3 * (1 + len(maps)), 8), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1 + len(maps), height_ratios=[3, 2])
    t = int(e.target[sample])
    photo_shape = photo.shape[:2] if photo is not None else None
    ax = fig.add_subplot(grid[0, 0])
    if photo is not None:
        ax.imshow(photo)
    ax.set_title(f"photo; target {name!r}\n(logit {float(e.logits[sample, t]):.2f})", fontsize=10)
    ax.set_axis_off()
    for col, (title, values, style, over) in enumerate(maps, start=1):
        ax = fig.add_subplot(grid[0, col])
        draw_map(fig, ax, photo if over else None, values, title, style, shape=photo_shape)
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


def draw_map(
    fig: Figure,
    ax: Axes,
    photo: np.ndarray | None,
    values: np.ndarray,
    title: str,
    style: MapStyle = MapStyle(),
    *,
    shape: tuple[int, int] | None = None,
) -> None:
    """Paint a map as the browser overlay does, with its colour bar: over the muted
    ``photo``, or alone (opaque colours, no photo) when ``photo`` is ``None``.

    The colours come from the display map (:func:`display_map`: the shown part,
    blurred by ``style.smooth``); ``values`` itself is not changed. ``shape`` (H, W) is
    the extent to stretch the map to when there is no photo (default: the map's).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    values = _as_map(values)
    h, w = values.shape
    if photo is not None:
        ax.imshow(backdrop(photo, style.photo_dim))
        h_img, w_img = photo.shape[:2]
    else:
        h_img, w_img = shape if shape is not None else (h, w)
    if h * w == 0:
        return
    rgba, vmax, table = _paint(values, style, fade=photo is not None)
    # the map is stretched over the photo (the browser scales it the same way)
    extent = (-0.5, w_img - 0.5, h_img - 0.5, -0.5)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    ax.set_xlim(-0.5, w_img - 0.5)
    ax.set_ylim(h_img - 0.5, -0.5)
    vmin = -vmax if style.sign == "signed" else 0.0
    cmap = ListedColormap(table[:, :3] / 255.0)
    sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02)
    # plain tick labels (no offset text, which would overlap the caption)
    bar.locator = MaxNLocator(4)
    bar.formatter = FuncFormatter(lambda x, _pos: f"{x:.3g}")
    bar.update_ticks()
    bar.set_label(style.describe(), fontsize=8)


def painted_heat(values: Any, style: MapStyle = MapStyle()) -> np.ndarray:
    """The heat layer's opacity per map pixel, in [0, 1], as :func:`draw_map` and the
    browser paint it over the photo: what a reader sees of the map (readability checks
    measure it)."""
    rgba, _, _ = _paint(_as_map(values), style)
    return rgba[..., 3].astype(np.float64) / 255.0


def _paint(
    values: np.ndarray, style: MapStyle, fade: bool = True
) -> tuple[np.ndarray, float, np.ndarray]:
    """(RGBA of the map, vmax, colour table) as the browser colours it: the display map
    (the shown part, blurred), clipped at the style's percentile."""
    table = lut(style.colormap)
    shown = display_map(values, style.sign, style.smooth)
    vmax = normalised_vmax(shown, style.sign, style.clip_percentile)
    rgba = colorize(
        shown, table, style.sign, style.opacity, vmax=vmax, fade=fade, gamma=style.gamma
    )
    return rgba, vmax, table


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
    "STYLES",
    "draw_map",
    "explanation_figure",
    "gradient_title",
    "layer_bars",
    "painted_heat",
    "pathway_title",
    "render_explanation",
    "save_figure",
    "target_name",
]
