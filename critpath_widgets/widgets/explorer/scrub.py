"""Scrubbing the sparsity at display rate: the pathway map at a grid of sparsities.

After a pathway result is shown and nothing waits, the worker computes the display
maps at :data:`~critpath_widgets.widgets.stack_codec.SCRUB_LEVELS` (one masked pass
each, from the cached scores) and loads them into the pathway overlay in one message.
The browser links the sparsity slider to the overlay's ``preview_sparsity`` (a
``jslink``), so a drag repaints from the nearest level without the kernel; the exact
map replaces it when the kernel answers.

Invariants: the overlay holds either no stack or a whole stack for the scoring on show
(image, target, method, scope) and the sign/blur it was made for; a new scoring clears
it *before* its first map is shown. Levels computed before a newer request interrupted
are kept here (never sent) and the next idle moment of the same scoring continues them;
once the stack is loaded they are dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ipywidgets
import numpy as np

from ...methods import is_baseline
from ..colormaps import display_map
from ..stack_codec import SCRUB_LEVELS

log = logging.getLogger(__name__)


class ScrubStack:
    """The kernel side of scrubbing for one explorer (its worker thread calls it)."""

    def __init__(self, explorer: Any, levels: tuple[float, ...] = SCRUB_LEVELS) -> None:
        self.explorer = explorer
        self.levels = tuple(levels)
        self.enabled = True
        #: the scoring key the partial levels and the loaded stack belong to
        self.key: tuple | None = None
        #: display key (sign, smooth) the partial levels were made for
        self.display: tuple | None = None
        self.partial: dict[float, np.ndarray] = {}
        self.loaded: tuple | None = None  # (key, display) of the overlay's stack
        #: seconds to compute the last whole stack, its bytes, levels computed so far
        self.stats: dict[str, float] = {"levels": 0, "stacks": 0, "interrupted": 0}
        ov = explorer.pathway_overlay
        self._link = ipywidgets.jslink(
            (explorer.sparsity_slider, "value"), (ov, "preview_sparsity")
        )
        ov.observe(self._on_display_change, ["sign", "smooth"])

    def _on_display_change(self, _change: dict) -> None:
        """A sign or blur change makes the stack stale: recompute it (the shown result is
        reused, so this costs the stack only)."""
        if self.loaded is not None and self.enabled:
            self.explorer._submit()

    def before_show(self, key: tuple) -> None:
        """Called before a result of ``key`` is shown: a new scoring discards the stack."""
        ov = self.explorer.pathway_overlay
        if self.loaded is not None and self.loaded[0] != key:
            ov.set_stack([], [], "", -1.0)
            self.loaded = None
        if self.key != key:
            self.key, self.partial = key, {}

    def after_show(self, req: Any, e: Any, key: tuple | None) -> None:
        """Called after a result is shown: mark the exact map's sparsity, then build the
        stack while nothing waits (``key`` ``None``: a baseline, which has no stack)."""
        ov = self.explorer.pathway_overlay
        if key is None or is_baseline(req.method):
            self.before_show(("baseline",))
            ov.values_sparsity = -1.0
            return
        ov.values_sparsity = float(req.sparsity)  # after the values: the exact map wins
        if not self.enabled or e is None or getattr(e, "path_dependent", False):
            return
        iv = getattr(e, "interventions", None)
        if iv is not None and iv.network == "full":
            self.before_show(("ablation",))  # an ablation's map has no sparsity to scrub
            return
        self.build(e, key)

    def build(self, e: Any, key: tuple) -> bool:
        """Compute the missing levels of ``key`` and load the whole stack; stop (keeping
        the levels made) as soon as a request waits. Returns whether it was loaded."""
        ex = self.explorer
        ov = ex.pathway_overlay
        display = (ov.sign, float(ov.smooth))
        if self.loaded == (key, display):
            return True
        if self.display != display:
            self.display, self.partial = display, {}
        session, worker = ex._session, ex._worker
        t0 = time.perf_counter()
        if float(e.sparsity) in self.levels and float(e.sparsity) not in self.partial:
            self.partial[float(e.sparsity)] = display_map(session.saliency(e), *display)
            self.stats["levels"] += 1
        for s in [s for s in self.levels if s not in self.partial]:
            if worker.has_pending or worker.closed:
                self.stats["interrupted"] += 1
                return False
            sal = session.saliency(e.at_sparsity(s))  # keeps e's interventions
            self.partial[s] = display_map(sal, *display).astype(np.float32, copy=False)
            self.stats["levels"] += 1
        if worker.has_pending or worker.closed:
            return False
        maps = [self.partial[s] for s in self.levels]
        ov.set_stack(maps, self.levels, *display)
        self.loaded = (key, display)
        self.partial = {}  # the overlay holds them now (a sign/blur change recomputes)
        self.stats["stacks"] += 1
        self.stats["last_s"] = time.perf_counter() - t0
        self.stats["bytes"] = len(ov.stack)
        return True

    def close(self) -> None:
        """Unlink the slider from the overlay."""
        try:
            self._link.unlink()
        except Exception:  # noqa: BLE001 - closing twice, or widgets already closed
            log.debug("scrub unlink failed", exc_info=True)


__all__ = ["ScrubStack"]
