"""Static figures of an explanation (matplotlib, no pyplot state), for reports and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .engine import Explanation, reduce_channels


def _signed_limits(m: np.ndarray, percentile: float = 99.5) -> float:
    nz = np.abs(m[m != 0])
    v = float(np.percentile(nz, percentile)) if nz.size else 1.0
    return v if v > 0 else 1.0


def explanation_figure(
    image: Image.Image,
    explanation: Explanation,
    gradient: torch.Tensor | None = None,
    categories: list[str] | None = None,
    sample: int = 0,
    cmap: str = "RdBu_r",
    opacity: float = 0.6,
):
    """A figure: the image, the pathway gradient over it, the plain gradient, the layer chart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = explanation
    t = int(e.target[sample])
    label = categories[t] if categories and t < len(categories) else f"class {t}"
    maps = [("pathway gradient", e.saliency_map("max_abs")[sample])]
    if gradient is not None:
        maps.append(("plain gradient", reduce_channels(gradient)[sample]))
    fig = Figure(figsize=(4.2 * (1 + len(maps)), 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1 + len(maps), height_ratios=[3, 1.6])
    img = np.asarray(image.convert("RGB"))
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(img)
    ax.set_title(f"{label}  (logit {float(e.logits[sample, t]):.2f})")
    ax.axis("off")
    for j, (title, m) in enumerate(maps, start=1):
        m = m.detach().cpu().float().numpy()
        v = _signed_limits(m)
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(img)
        h, w = img.shape[:2]
        # as in the widget: alpha grows with |value|, so zero attribution shows the photo
        alpha = opacity * np.clip(np.abs(m) / v, 0.0, 1.0)
        im = ax.imshow(
            m, cmap=cmap, vmin=-v, vmax=v, alpha=alpha, extent=(0, w, h, 0), interpolation="nearest"
        )
        extra = f", sparsity {e.sparsity:.2f}" if j == 1 else ""
        ax.set_title(f"{title}{extra}")
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.8)
    summary = e.layer_summary(sample)
    ax = fig.add_subplot(grid[1, :])
    xs = np.arange(len(summary))
    ax.bar(xs, [s.total for s in summary], color="#c9d3e0", label="total contribution")
    ax.bar(xs, [s.kept_total for s in summary], color="#d6604d", label="kept by the pathway")
    ax.set_xticks(xs, [s.name for s in summary], rotation=90, fontsize=6)
    ax.set_ylabel("contribution")
    ax.set_title(f"per-site contributions ({e.method}, {e.scope} scope)")
    ax.legend(fontsize=8)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure to ``path`` (format from the suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
