"""The explorer's baselines: gradient, Grad-CAM, SmoothGrad, ... in the method picker.

A baseline's map is ``attribute(model, x, method, target)`` reduced to (H, W) exactly
as the pathway map is (the session's ``reduce``), cached per (image, target, method).
A baseline has no pathway: while one is on show the sparsity and scope controls are
disabled and the layer panel says so. The slow baselines (integrated gradients,
SmoothGrad) run batched, their forward passes counted for the progress bar and checked
for Cancel. :class:`BaselineMixin` holds the explorer's baseline logic, so that
``widget.py`` stays about the pathway methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...engine import reduce_channels
from ...errors import InputError
from ...methods import BASELINES, is_baseline, method_label, method_name
from .caches import ImageEntry
from .view import esc

#: Options the explorer passes to ``attribute`` for a baseline: the slow ones run in
#: batches so that the progress bar moves and Cancel acts between batches.
WIDGET_BASELINE_OPTIONS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 50, "internal_batch_size": 10},
    "smoothgrad": {"nt_samples": 25, "nt_samples_batch_size": 5},
}
#: SmoothGrad's noise is drawn from this seed: the same picture gives the same map.
SMOOTHGRAD_SEED = 0
#: The layer panel's text while a baseline is on show.
NO_PATHWAY_HTML = (
    "<i>{name} is a baseline: its map comes from the full network, so it has no "
    "pathway, and the sparsity and scope do not apply. Pick a pathway method to see "
    "the contribution per site.</i>"
)


def available_baselines() -> tuple[str, ...]:
    """The baselines the picker offers: all of them when Captum is installed, else none."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return ()
    return BASELINES


def forward_passes(method: str) -> int:
    """How many forward passes ``attribute`` makes for a slow baseline (progress total):
    one for the logits, then one per batch of steps / noisy samples."""
    o = WIDGET_BASELINE_OPTIONS.get(method)
    if o is None:
        return 1
    if method == "integrated_gradients":
        return 1 + math.ceil(o["n_steps"] / o["internal_batch_size"])
    return 1 + math.ceil(o["nt_samples"] / o["nt_samples_batch_size"])


class ProgressNet(nn.Module):
    """``net`` unchanged, but every forward pass first calls ``progress(done, total)``
    (which raises Cancelled on Cancel): a wrapper, so the user's model gets no hook."""

    def __init__(self, net: nn.Module, progress: Callable[[int, int], None], total: int) -> None:
        super().__init__()
        self.net = net
        self._progress = progress
        self._total = total
        self._done = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Report one more pass to ``progress`` (which may raise Cancelled), then run ``net``."""
        self._progress(min(self._done, self._total - 1), self._total)
        self._done += 1
        return self.net(x)


def compute_baseline(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    target: int,
    reduce: str = "max_abs",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The (H, W) float32 map of a baseline, reduced over channels like the pathway map."""
    from ...attribution import attribute

    options = WIDGET_BASELINE_OPTIONS.get(method, {})
    net = model
    if progress is not None and method in WIDGET_BASELINE_OPTIONS:
        net = ProgressNet(model, progress, forward_passes(method))
    if method == "smoothgrad":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SMOOTHGRAD_SEED)
            a = attribute(net, x, method, target, **options)
    else:
        a = attribute(net, x, method, target, **options)
    if progress is not None:
        total = forward_passes(method)
        progress(total, total)
    m = reduce_channels(a.detach().float(), reduce, x.detach().float())[0]
    return m.cpu().numpy().astype(np.float32)


class BaselineMixin:
    """The explorer's baseline requests, control states and figure (mixed into
    :class:`PathwayExplorer`, whose attributes it uses)."""

    def _sync_method_controls(self) -> None:
        """Disable sparsity and scope while a baseline is picked (they do not apply)."""
        off = is_baseline(self.method)
        self.sparsity_slider.disabled = off
        self.scope_buttons.disabled = off

    def _process_baseline(self, req: Any, entry: ImageEntry, target: int) -> None:
        """Get a baseline's map (cached or computed, with progress if slow) and show it."""
        session, stale = self._session, self._worker.is_stale
        key = (entry.id, target, req.method)
        t0 = time.perf_counter()
        with self._lock:
            sal = session.baselines.get(key)
        if sal is None:
            sal = self._with_progress(
                req,
                lambda p: compute_baseline(
                    session.model, entry.x, req.method, target, session.reduce, p
                ),
                False,
            )
            session.stats["baseline"] = session.stats.get("baseline", 0) + 1
            with self._lock:
                session.baselines.put(key, sal)
        else:
            self.stats["reused"] += 1
        if stale(req):
            return
        grad = session.gradient(entry, target)
        if stale(req):
            return
        t1 = time.perf_counter()
        self._show_baseline(req, entry, target, sal, grad, t1 - t0)
        self.last_timing = {"compute_s": t1 - t0, "show_s": time.perf_counter() - t1}

    def _show_baseline(self, req: Any, entry: ImageEntry, target: int, sal, grad, seconds) -> None:
        """Put a baseline's map on show; the layer panel says that it has no pathway."""
        new_image = self._images.shown != entry.id
        new_gradient = new_image or self._shown is None or self._shown["target"] != target
        self.show_maps(
            entry.display if new_image else None,
            sal,
            f"{method_name(req.method)}: {self.category(target)}",
            grad if new_gradient else None,
            f"plain gradient: {self.category(target)}",
        )
        self.layers.update(None, entry.display if new_image else None)
        self.layers.details.value = NO_PATHWAY_HTML.format(name=esc(method_name(req.method)))
        self._auto_site = True  # back on a pathway method, open the strongest site again
        p = self._mark_shown(req, entry, target, None, sal)
        self.show_message(
            f"<b>{esc(self.category(target))}</b> (p = {p:.1%}), "
            f"{esc(method_label(req.method))}: a baseline map of the full network (no "
            f"pathway; sparsity and scope do not apply). ({seconds * 1000:.0f} ms)",
            "info",
        )

    def _save_baseline(self, path: str | Path, dpi: int) -> Path:
        """Write the photo, the baseline's map and the plain gradient (no layer chart)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from ...report import MapStyle, draw_map, gradient_title, save_figure

        shown = self._shown
        if shown is None or getattr(self, "_baseline_map", None) is None:
            raise InputError("nothing to save yet: no map has been computed")
        entry = self._images.get(self._images.shown)
        photo = np.asarray(entry.display.convert("RGB")) if entry is not None else None
        name = self.category(int(shown["target"]))
        fig = Figure(figsize=(4.3 * 3, 5), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        if photo is not None:
            axes[0].imshow(photo)
        axes[0].set_title(f"photo; target {name!r}", fontsize=10)
        axes[0].set_axis_off()
        title = f"{method_name(shown['method'])} of {name!r}\n(baseline, full network)"
        ov, gov = self.pathway_overlay, self.gradient_overlay
        draw_map(fig, axes[1], photo, np.asarray(ov.array), title, MapStyle.of(ov))
        draw_map(fig, axes[2], photo, np.asarray(gov.array), gradient_title(name), MapStyle.of(gov))
        return save_figure(fig, path, dpi=dpi)


__all__ = [
    "BaselineMixin",
    "NO_PATHWAY_HTML",
    "ProgressNet",
    "SMOOTHGRAD_SEED",
    "WIDGET_BASELINE_OPTIONS",
    "available_baselines",
    "compute_baseline",
    "forward_passes",
]
