"""EvaluationPanel: deletion / insertion curves, a sanity check and the pathway analysis
of the explorer's current image and method, computed in a thread of its own.

Data flows one way: ``Run`` takes a snapshot of what the explorer shows
(:class:`EvalContext`), a background thread computes through
:mod:`.evaluation_adapter` (the one door to ``critpath_widgets.evaluation``) and the
panel draws the results; Cancel stops it between steps. Every model computation holds
the context's ``lock`` (the explorer's compute lock), so the panel never runs the model
while the explorer's worker has hooks on it.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import torch

from ..errors import Cancelled, CritpathError
from ..methods import BASELINES, method_name
from . import evaluation_adapter as ev
from .background import BackgroundRun

log = logging.getLogger(__name__)

#: Line colours, in order: the current method, the chosen baselines, then random order.
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
#: Sparsities of the retained-logit curve.
RETAINED_SPARSITIES = np.round(np.linspace(0.0, 0.95, 11), 3)
RANDOM_LABEL = "random order"


@dataclass
class EvalContext:
    """What the explorer shows, taken on the kernel's thread when Run is pressed."""

    model: torch.nn.Module
    x: torch.Tensor  # (1, C, H, W)
    target: int
    method: str  # the explorer's method (engine method or baseline)
    map_of: Callable[[str], np.ndarray]  # method -> its (H, W) map on this image
    method_fn: Callable[[str], Callable[..., torch.Tensor]]  # method -> f(net, x, target)
    explanation: Any | None  # the pathway on show (None for a baseline)
    explain_other: Callable[[str], Any] | None  # engine method -> its Explanation
    lock: Any  # held around every model computation


def _figure(title: str, x_label: str, y_label: str) -> tuple[bq.Figure, bq.Lines]:
    """A line chart with a legend: one line per method."""
    xs, ys = bq.LinearScale(), bq.LinearScale()
    lines = bq.Lines(
        x=np.zeros(0), y=np.zeros((0, 0)), scales={"x": xs, "y": ys}, display_legend=True
    )
    fig = bq.Figure(
        marks=[lines],
        axes=[
            bq.Axis(scale=xs, label=x_label),
            bq.Axis(scale=ys, side="left", label=y_label),
        ],
        title=title,
        legend_location="top-right",
        fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 10},
        layout=widgets.Layout(width="420px", height="300px"),
    )
    return fig, lines


class EvaluationPanel(BackgroundRun, widgets.VBox):
    """Deletion/insertion curves, sanity check and pathway analysis, run on demand.

    ``context`` returns the explorer's :class:`EvalContext` (raising a CritpathError if
    nothing is on show); ``pathway_methods`` are the engine methods for the Jaccard picker.
    """

    def __init__(
        self,
        context: Callable[[], EvalContext],
        pathway_methods: Sequence[str] = (),
        baselines: Sequence[str] = BASELINES,
        **kwargs: Any,
    ) -> None:
        self._context = context
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        #: the last run's numbers: "deletion"/"insertion" -> {label: Curve}, "sanity",
        #: "dead_share", "jaccard", "retained"
        self.results: dict[str, Any] = {}
        self.last_error: BaseException | None = None
        options = [(method_name(b), b) for b in baselines]
        self.compare = widgets.SelectMultiple(
            options=options,
            value=("gradient",) if "gradient" in baselines else (),
            description="compare",
            rows=4,
            style={"description_width": "60px"},
        )
        self.steps = widgets.IntSlider(20, min=4, max=50, description="steps")
        self.removal = widgets.Dropdown(options=["blur", "zero"], value="blur", description="fill")
        self.sanity = widgets.Checkbox(False, description="sanity check (slow)")
        others = [(method_name(m), m) for m in pathway_methods]
        self.other_method = widgets.Dropdown(
            options=others,
            value="random" if "random" in pathway_methods else (others[0][1] if others else None),
            description="Jaccard vs",
        )
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(min=0, max=1, value=0)
        self.message = widgets.HTML("<i>Press Run to evaluate the method on show.</i>")
        self.message.add_class("critpath-eval-message")
        self.deletion_figure, self.deletion_lines = _figure(
            "Deletion (lower is better)", "fraction removed", "target probability"
        )
        self.insertion_figure, self.insertion_lines = _figure(
            "Insertion (higher is better)", "fraction inserted", "target probability"
        )
        self.auc_table = widgets.HTML("")
        self.sanity_figure, self.sanity_lines = _figure(
            "Sanity check: cascading randomisation", "layers randomised", "similarity"
        )
        self.retained_figure, self.retained_lines = _figure(
            "Pathway: retained target logit", "sparsity", "target logit"
        )
        self.pathway_html = widgets.HTML("")
        self.run_button.on_click(lambda _b: self.run())
        self.cancel_button.on_click(lambda _b: self.cancel())
        row = widgets.HBox
        super().__init__(
            children=[
                row([self.compare, widgets.VBox([self.steps, self.removal, self.sanity])]),
                row([self.other_method, self.run_button, self.cancel_button, self.progress]),
                self.message,
                row([self.deletion_figure, self.insertion_figure]),
                self.auc_table,
                row([self.sanity_figure, self.retained_figure]),
                self.pathway_html,
            ],
            **kwargs,
        )
        self.add_class("critpath-evaluation")

    # ------------------------------------------------------------------ public API
    def run(self) -> None:
        """Start the evaluation of what the explorer shows (ignored while one runs)."""
        if self.busy:
            return
        try:
            ctx = self._context()
        except CritpathError as err:
            self._error(err)
            return
        self._cancel.clear()
        self.last_error = None
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.message.value = "<i>Evaluating...</i>"
        args = (ctx, tuple(self.compare.value), self.steps.value, self.removal.value)
        self._thread = threading.Thread(
            target=self._work, args=args, name="critpath-evaluation", daemon=True
        )
        self._thread.start()

    def cancel(self) -> None:
        """Stop the run at the next step."""
        if self.busy:
            self._cancel.set()
            self.message.value = "<i>Cancelling...</i>"

    def close(self) -> None:
        """Cancel a run and close the panel's widgets."""
        self._cancel.set()
        for fig in (
            self.deletion_figure,
            self.insertion_figure,
            self.sanity_figure,
            self.retained_figure,
        ):
            for w in (*fig.marks, *fig.axes, fig):
                w.close()
        for w in (
            self.compare,
            self.steps,
            self.removal,
            self.sanity,
            self.other_method,
            self.run_button,
            self.cancel_button,
            self.progress,
            self.message,
            self.auc_table,
            self.pathway_html,
            *self.children,
        ):
            w.close()
        super().close()

    # ------------------------------------------------------------------- the work
    def _check(self, done: int, total: int) -> None:
        """Progress callback: raise Cancelled after Cancel, else move the bar."""
        if self._cancel.is_set():
            raise Cancelled("evaluation cancelled by the user")
        self.progress.max, self.progress.value = max(total, 1), min(done, total)

    def _work(self, ctx: EvalContext, compare: tuple[str, ...], steps: int, fill: str) -> None:
        try:
            self._compute(ctx, compare, steps, fill)
            self.message.value = "Evaluation done."
        except Cancelled as err:
            self.last_error = err
            self.message.value = "<b>Cancelled</b>: the evaluation was stopped."
        except Exception as err:  # noqa: BLE001 - shown in the panel
            if not isinstance(err, CritpathError):
                log.exception("EvaluationPanel: evaluation failed")
            self._error(err)
        finally:
            self.run_button.disabled, self.cancel_button.disabled = False, True

    def _compute(self, ctx: EvalContext, compare: tuple[str, ...], steps: int, fill: str) -> None:
        methods = [ctx.method, *[b for b in compare if b != ctx.method]]
        pathway = ctx.explanation is not None
        total = 2 * len(methods) + 2 + (1 if self.sanity.value else 0) + (2 if pathway else 0)
        done = 0
        maps = {}
        for m in methods:
            self._check(done, total)
            with ctx.lock:
                maps[m] = ctx.map_of(m)
        for kind, lines in (("deletion", self.deletion_lines), ("insertion", self.insertion_lines)):
            curves = {}
            for m in [*methods, None]:
                self._check(done, total)
                with ctx.lock:
                    curves[m] = ev.curve(
                        kind, ctx.model, ctx.x, maps.get(m), ctx.target, steps, fill
                    )
                done += 1
            self.results[kind] = {
                method_name(m) if m else RANDOM_LABEL: c for m, c in curves.items()
            }
            self._draw_curves(lines, self.results[kind])
        self._draw_auc_table()
        if self.sanity.value:
            self._check(done, total)

            def inner(i: int, n: int) -> None:
                self._check(done, total)

            with ctx.lock:
                fns = {m: ctx.method_fn(m) for m in methods}
                s = ev.sanity_check(ctx.model, ctx.x, fns, ctx.target, progress=inner)
            self.results["sanity"] = s
            self._draw(
                self.sanity_lines,
                np.arange(len(s.steps)),
                {method_name(m): v for m, v in s.similarity.items()},
            )
            done += 1
        if pathway:
            self._pathway(ctx, done, total)
        else:
            self.pathway_html.value = (
                f"<i>{html.escape(method_name(ctx.method))} is a baseline: it has no pathway "
                "to analyse.</i>"
            )
        self._check(total, total)

    def _pathway(self, ctx: EvalContext, done: int, total: int) -> None:
        """Dead share, Jaccard with another method's pathway, retained logit curve."""
        e = ctx.explanation
        other = self.other_method.value
        with ctx.lock:
            dead, dead_sites = ev.dead_share(e)
            self.results["dead_share"] = (dead, dead_sites)
            self._check(done, total)
            if other is not None and ctx.explain_other is not None:
                self.results["jaccard"] = ev.jaccard(e, ctx.explain_other(other))
            done += 1
            self._check(done, total)
            logits, probs = ev.retained(
                e, RETAINED_SPARSITIES, ctx.target, lambda i, n: self._check(done, total)
            )
        self.results["retained"] = (RETAINED_SPARSITIES, logits, probs)
        self._draw(self.retained_lines, RETAINED_SPARSITIES, {method_name(e.method): logits})
        text = f"Pathway of {method_name(e.method)}: dead share {dead:.1%} of the kept neurons"
        if "jaccard" in self.results and other is not None:
            text += f"; Jaccard overlap with {method_name(other)}: {self.results['jaccard'][0]:.3f}"
        self.pathway_html.value = text + "."

    # ------------------------------------------------------------------- drawing
    def _draw_curves(self, lines: bq.Lines, curves: dict[str, ev.Curve]) -> None:
        """One line per method, AUC in the legend."""
        first = next(iter(curves.values()))
        ys = {f"{k} (AUC {c.auc:.3f})": c.scores for k, c in curves.items()}
        self._draw(lines, first.fractions, ys)

    @staticmethod
    def _draw(lines: bq.Lines, x: np.ndarray, ys: dict[str, np.ndarray]) -> None:
        with lines.hold_sync():
            lines.x = np.asarray(x, dtype=np.float64)
            lines.y = np.vstack([np.asarray(v, dtype=np.float64) for v in ys.values()])
            lines.labels = list(ys)
            lines.colors = COLORS[: len(ys)] if len(ys) <= len(COLORS) else COLORS

    def _draw_auc_table(self) -> None:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{c.auc:.3f}</td>"
            f"<td>{self.results['insertion'][k].auc:.3f}</td></tr>"
            for k, c in self.results["deletion"].items()
        )
        self.auc_table.value = (
            "<table><tr><th>method</th><th>deletion AUC</th><th>insertion AUC</th></tr>"
            f"{rows}</table>"
        )

    def _error(self, err: BaseException) -> None:
        """Show an error in the panel's message (the panel keeps working)."""
        self.last_error = err
        self.message.value = f"<b>Error:</b> {html.escape(str(err))}"


__all__ = ["EvalContext", "EvaluationPanel", "RANDOM_LABEL", "RETAINED_SPARSITIES"]
