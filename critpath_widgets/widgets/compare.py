"""ComparisonPanel: the explorer's photo and target through several methods at once.

Data flows one way: :meth:`ComparisonPanel.update` takes a snapshot of what the
explorer shows (:class:`CompareContext`); a background thread computes each method
through :func:`critpath_widgets.comparison.compare_methods` (fast methods first, the
model computation under the context's ``lock``, the explorer's compute lock) and each
small overlay is painted as its map arrives. A newer snapshot supersedes the run (it
stops at the next step), so the panel never shows maps of a state no longer on show.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from ..attribution import PATHWAY_METHODS
from ..comparison import (
    Comparison,
    MethodResult,
    available_methods,
    canonical_method,
    compare_methods,
    display_name,
)
from ..errors import Cancelled, CritpathError, InputError
from ..methods import LONG_METHODS
from .background import BackgroundRun
from .overlay import AttributionOverlay

log = logging.getLogger(__name__)
#: the run key while a run gave way to the explorer (never equal to a real key)
_WAITING = object()

#: Width in pixels of each small overlay (three fit a notebook column side by side).
CELL_WIDTH = 220
#: What the panel says about itself (the section's help line).
HELP_HTML = (
    "<i>The same photo and target through several methods. A pathway method's map is "
    "the gradient through its critical pathway; its caption gives the target logit of "
    "that pathway alone next to the full network's. A pathway that keeps the evidence "
    "keeps the logit; the random pathway loses it. Baselines use the full network.</i>"
)


@dataclass
class CompareContext:
    """What the explorer shows, taken on the kernel's thread for one comparison."""

    #: identifies the state compared: a run whose key is on show is not repeated
    key: Hashable
    explainer: Any  # the explorer's PathwayExplainer
    x: torch.Tensor  # (1, C, H, W)
    target: int
    sparsity: float
    scope: str
    target_name: str
    display: Any  # the picture under the overlays (PIL), or None
    steps: int = 10
    reduce: str = "max_abs"
    #: engine method -> the explorer's cached Explanation of the same picture and target
    explanations: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: Any = dataclasses.field(default_factory=threading.RLock)
    #: whether the explorer has been asked for something newer since the snapshot: the
    #: run then gives way (the explorer waits for the lock) and is redone once shown
    moved_on: Callable[[], bool] = lambda: False


def _is_slow(method: str) -> bool:
    """Whether a method takes many passes (computed after the others)."""
    return PATHWAY_METHODS.get(method, method) in LONG_METHODS


def caption_html(comparison: Comparison, method: str, target_name: str) -> str:
    """A cell's caption: method, what it ran at, target and the logit it stands for."""
    r, how = comparison[method], comparison.setting_text(method)
    kept = ""
    if r.pathway and comparison.full_logit > 0:
        kept = f" <b>({r.logit / comparison.full_logit:.0%} of it)</b>"
    return (
        f'<div style="line-height: 1.35">'
        f"<b>{html.escape(r.name)}</b><br>{html.escape(how)}, "
        f"target {html.escape(repr(target_name))}<br>"
        f"{html.escape(comparison.logit_text(method))}{kept}</div>"
    )


class ComparisonPanel(BackgroundRun, widgets.VBox):
    """A grid of small overlays, one per method, of the explorer's photo and target.

    ``context`` returns the explorer's :class:`CompareContext` (raising a CritpathError
    when nothing is on show); ``methods`` are the attribution methods offered (names as
    in ``attribute`` or the engine's), ``selected`` those compared at first.
    """

    def __init__(
        self,
        context: Callable[[], CompareContext],
        methods: Sequence[str] | None = None,
        selected: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._context = context
        offered = [canonical_method(m) for m in (methods or available_methods())]
        chosen = [canonical_method(m) for m in (selected or available_methods())]
        chosen = [m for m in chosen if m in offered]
        self._thread: threading.Thread | None = None
        self._gen = 0  # the run whose results may be shown
        self._run_key: Hashable | None = None  # (context key, methods) of that run
        self._guard = threading.Lock()
        self.is_open = False
        #: the last complete comparison on show (None before one and while a run goes)
        self.comparison: Comparison | None = None
        self._shown_ctx: CompareContext | None = None  # the context of that comparison
        self.last_error: BaseException | None = None
        self.methods = widgets.SelectMultiple(
            options=[(display_name(m), m) for m in offered],
            value=tuple(chosen),
            description="methods",
            rows=min(6, max(2, len(offered))),
            tooltip="The methods shown side by side (ctrl/shift-click to choose)",
            style={"description_width": "60px"},
            layout=widgets.Layout(width="320px"),
        )
        self.help = widgets.HTML(HELP_HTML, layout=widgets.Layout(flex="1 1 240px"))
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", disabled=True, tooltip="Stop the comparison"
        )
        self.progress = widgets.IntProgress(min=0, max=1, value=0)
        self.message = widgets.HTML("<i>Open this section to compare the methods.</i>")
        self.message.add_class("critpath-compare-message")
        self.grid = widgets.HBox(
            layout=widgets.Layout(flex_flow="row wrap", width="100%", align_items="flex-start")
        )
        self.grid.add_class("critpath-compare-grid")
        self.overlays: dict[str, AttributionOverlay] = {}
        self.captions: dict[str, widgets.HTML] = {}
        self._cells: list[widgets.Widget] = []
        self.methods.observe(lambda _c: self.update(), "value")
        self.cancel_button.on_click(lambda _b: self.cancel())
        controls = widgets.HBox(
            [self.methods, self.help], layout=widgets.Layout(flex_flow="row wrap", width="100%")
        )
        status = widgets.HBox([self.progress, self.cancel_button])
        super().__init__(children=[controls, status, self.message, self.grid], **kwargs)
        self.add_class("critpath-compare")

    # ------------------------------------------------------------------ public API
    def set_open(self, is_open: bool) -> None:
        """The section was opened (compare what is on show) or closed (stop computing)."""
        self.is_open = bool(is_open)
        if self.is_open:
            self.update()
        else:
            self.cancel()

    def update(self, force: bool = False) -> None:
        """Compare what the explorer shows, unless that is already on show or computing
        (``force``: again anyway). Ignored while the section is closed."""
        if not self.is_open:
            return
        try:
            ctx = self._context()
        except CritpathError as err:
            self._error(err)
            return
        methods = tuple(self.methods.value)
        key = (ctx.key, methods)
        with self._guard:
            if key == self._run_key and not force:
                return
            self._gen += 1
            gen = self._gen
            self._run_key = key
        self.last_error = None
        self.comparison = None
        if not methods:
            self._layout_cells((), ctx)
            self.message.value = "<i>Choose at least one method.</i>"
            return
        self._layout_cells(methods, ctx)
        self.message.value = "<i>Comparing...</i>"
        self.cancel_button.disabled = False
        self._thread = threading.Thread(
            target=self._work, args=(ctx, methods, gen), name="critpath-compare", daemon=True
        )
        self._thread.start()

    def cancel(self) -> None:
        """Stop the comparison at the next step (the maps computed so far stay)."""
        with self._guard:
            running = self.busy
            self._gen += 1
            self._run_key = None  # opening again computes anew
        if running:
            self.message.value = "<i>Cancelling...</i>"

    def save(self, path: str | Path, *, dpi: int = 120) -> Path:
        """Write the comparison on show as a static figure (format from the suffix),
        drawn by :func:`critpath_widgets.comparison.comparison_figure`."""
        from ..comparison import comparison_figure
        from ..report import save_figure

        c, ctx = self.comparison, self._shown_ctx
        if c is None or ctx is None:
            raise InputError("no comparison on show yet: open the section and wait for it")
        fig = comparison_figure(ctx.display, c, name=ctx.target_name)
        return save_figure(fig, path, dpi=dpi)

    def close(self) -> None:
        """Stop a run and close the panel's widgets."""
        with self._guard:
            self._gen += 1
        for w in (*self._cells, *self.overlays.values(), *self.captions.values()):
            w.close()
        for w in (self.methods, self.help, self.cancel_button, self.progress, self.message):
            w.close()
        for w in (self.grid, *self.children):
            w.close()
        super().close()

    # ------------------------------------------------------------------- the work
    def _layout_cells(self, methods: Sequence[str], ctx: CompareContext) -> None:
        """One cell (overlay over caption) per method, in the order chosen; overlays are
        kept across runs so that the browser repaints instead of rebuilding, but are
        blanked at once: a map of a state no longer on show is never left up."""
        blank = np.zeros(tuple(ctx.x.shape[-2:]), dtype=np.float32)
        for m in methods:
            if m not in self.overlays:
                ov = AttributionOverlay(label=display_name(m), display_width=CELL_WIDTH)
                ov.add_class("critpath-compare-overlay")
                self.overlays[m] = ov
                self.captions[m] = widgets.HTML(layout=widgets.Layout(width=f"{CELL_WIDTH}px"))
            self.overlays[m].set_data(image=ctx.display, values=blank)
            self.captions[m].value = f"<b>{html.escape(display_name(m))}</b><br><i>computing...</i>"
        cells = [
            widgets.VBox(
                [self.overlays[m], self.captions[m]],
                layout=widgets.Layout(width=f"{CELL_WIDTH + 16}px", margin="0 8px 8px 0"),
            )
            for m in methods
        ]
        old, self._cells = self._cells, cells
        self.grid.children = cells
        for c in old:
            c.close()

    def _check(self, gen: int, ctx: CompareContext) -> Callable[[int, int], None]:
        """Progress callback of run ``gen``: raise Cancelled once it is superseded or
        the explorer moved on (then the next update computes again)."""

        def check(done: int, total: int) -> None:
            if gen != self._gen:
                raise Cancelled("comparison superseded")
            if ctx.moved_on():
                with self._guard:
                    if gen == self._gen:
                        self._run_key = _WAITING
                raise Cancelled("the explorer moved on")
            self.progress.max, self.progress.value = max(total, 1), min(done, total)

        return check

    def _work(self, ctx: CompareContext, methods: tuple[str, ...], gen: int) -> None:
        try:
            self._compute(ctx, methods, gen)
        except Cancelled:
            if self._run_key is None:  # stopped by cancel(), not superseded by a newer run
                self.message.value = "<i>Stopped: the maps computed so far are shown.</i>"
            elif self._run_key is _WAITING:
                self.message.value = "<i>Waiting for the explorer's new result...</i>"
        except Exception as err:  # noqa: BLE001 - shown in the panel
            if gen == self._gen:
                if not isinstance(err, CritpathError):
                    log.exception("ComparisonPanel: comparison failed")
                self._error(err)
        finally:
            if gen == self._gen or self._run_key in (None, _WAITING):  # no newer run owns it
                self.cancel_button.disabled = True

    def _compute(self, ctx: CompareContext, methods: tuple[str, ...], gen: int) -> None:
        """Each method in turn (fast ones first), painted as it comes, then the whole."""
        order = sorted(methods, key=_is_slow)
        check = self._check(gen, ctx)
        results: dict[str, MethodResult] = {}
        part: Comparison | None = None
        for i, m in enumerate(order):
            check(i, len(order))
            with ctx.lock:
                part = compare_methods(
                    ctx.explainer,
                    ctx.x,
                    ctx.target,
                    [m],
                    ctx.sparsity,
                    ctx.scope,
                    reduce=ctx.reduce,
                    steps=ctx.steps,
                    explanations=ctx.explanations,
                    progress=lambda _d, _n, i=i: check(i, len(order)),
                )
            results[m] = part.results[m]
            if gen != self._gen:
                raise Cancelled("comparison superseded")
            self.overlays[m].set_data(image=ctx.display, values=results[m].map)
            self.captions[m].value = caption_html(part, m, ctx.target_name)
        check(len(order), len(order))
        assert part is not None  # methods is not empty
        self.comparison = dataclasses.replace(part, results={m: results[m] for m in methods})
        self._shown_ctx = ctx
        self.message.value = (
            f"Compared {len(methods)} methods on {html.escape(repr(ctx.target_name))}: "
            f"full network logit {part.full_logit:.2f}."
        )

    def _error(self, err: BaseException) -> None:
        """Show an error in the panel's message (the panel keeps working)."""
        self.last_error = err
        self.message.value = f"<b>Error:</b> {html.escape(str(err))}"


__all__ = ["CELL_WIDTH", "CompareContext", "ComparisonPanel", "caption_html"]
