"""The layer panel's site chart: stacked bars per site (kept, removed) that can be hit.

Most sites of a model hold a small share of the contribution, so their bars are a pixel
or two tall. Two bqplot ``Bars`` marks share the scales: the visible stacked bars (no
interaction) and, on top, one transparent *hit bar* per site spanning the whole height
of the chart with no gap between sites, which takes the clicks and the hovers. A click
anywhere in a site's column selects it; the selected column is shaded.

The y axis is linear or logarithmic (:meth:`SiteChart.set_data`'s ``log``). A log scale
cannot show 0, so there the bars start at a floor below the smallest positive total
(half of it) and values under it are drawn at the floor: the shown heights differ from
the contributions only below that floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ..report import KEPT_COLOR, REMOVED_COLOR

#: at most this many x ticks, each a site's label (bqplot spaces an ordinal axis's ticks
#: evenly and ignores ``tick_values`` there)
MAX_TICKS = 8
#: the selected column's shading (the hit bars are otherwise fully transparent)
SELECTED_COLUMN = {"opacity": 0.12}


def log_floor(total: np.ndarray) -> float:
    """The bottom of the log axis: half the smallest positive total (1.0 without any)."""
    positive = total[total > 0]
    return float(positive.min()) / 2.0 if positive.size else 1.0


def stacked_rows(
    kept: np.ndarray, removed: np.ndarray, log: bool
) -> tuple[np.ndarray, float, float]:
    """(2, n) rows for bqplot's stacked bars, their base and the top of the chart.

    bqplot stacks each row's ``value - base`` on the previous one, from ``base``. Linear:
    base 0, rows (kept, removed). Log: base = :func:`log_floor`, rows chosen so that
    the kept part ends at max(kept, floor) and the bar at max(total, floor).
    """
    total = kept + removed
    if not log:
        top = float(total.max()) if total.size and total.max() > 0 else 1.0
        return np.vstack([kept, removed]), 0.0, top
    floor = log_floor(total)
    total_shown = np.maximum(total, floor)
    kept_shown = np.minimum(np.maximum(kept, floor), total_shown)
    rows = np.vstack([kept_shown, total_shown - kept_shown + floor])
    top = float(total_shown.max()) if total.size else floor * 10.0
    return rows, floor, top


def _marks(x_scale: bq.Scale, y_scale: bq.Scale, tooltip: widgets.Widget) -> list[bq.Bars]:
    """The visible stacked bars and the hit bars on top of them, on these scales."""
    bars = bq.Bars(
        x=np.zeros(0),
        y=np.zeros((2, 0)),
        scales={"x": x_scale, "y": y_scale},
        type="stacked",
        colors=[KEPT_COLOR, REMOVED_COLOR],
        labels=["kept by the pathway", "removed"],
        padding=0.15,
        selected_style={"stroke": "black", "stroke-width": 2},
        unselected_style={"opacity": 0.55},
    )
    # invariant: one hit bar per site, full height, no padding: every point of the plot
    # area above the x axis lies in exactly one site's column
    hits = bq.Bars(
        x=np.zeros(0),
        y=np.zeros(0),
        scales={"x": x_scale, "y": y_scale},
        colors=["black"],
        opacities=[0.0],
        padding=0.0,
        interactions={"click": "select", "hover": "tooltip"},
        selected_style=SELECTED_COLUMN,
        tooltip=tooltip,
    )
    return [bars, hits]


class SiteChart:
    """The bqplot figure of the site chart and its marks (see the module docstring).

    The linear and the log view each have their own pair of marks and y axis, all kept
    up to date; switching shows the other pair (changing a mark's scale in place
    leaves bqplot's front end drawing NaNs and ignoring hovers).
    """

    def __init__(self, tooltip: widgets.Widget) -> None:
        self.xs = bq.OrdinalScale()
        self.scales = {False: bq.LinearScale(min=0.0), True: bq.LogScale()}
        self.marks = {log: _marks(self.xs, scale, tooltip) for log, scale in self.scales.items()}
        self.y_axes = {
            log: bq.Axis(scale=scale, side="left", label="contribution", tick_format="~s")
            for log, scale in self.scales.items()
        }
        self.log = False
        self.x_axis = bq.Axis(
            scale=self.xs,
            label="site (call order)",
            num_ticks=MAX_TICKS,
            tick_rotate=-35,
            tick_style={"text-anchor": "end"},  # the label ends at its tick
            label_offset="80px",
        )
        self.figure = bq.Figure(
            marks=self.marks[False],
            axes=[self.x_axis, self.y_axes[False]],
            title="Contribution per site (click a site's column)",
            fig_margin={"top": 40, "bottom": 95, "left": 60, "right": 10},
            layout=widgets.Layout(width="100%", height="310px"),
        )
        self.figure.add_class("critpath-layer-chart")

    @property
    def bars(self) -> bq.Bars:
        """The visible stacked bars of the view on show."""
        return self.marks[self.log][0]

    @property
    def hits(self) -> bq.Bars:
        """The hit bars of the view on show."""
        return self.marks[self.log][1]

    def hit_marks(self) -> list[bq.Bars]:
        """The hit bars of both views (whose clicks and hovers the panel handles)."""
        return [self.marks[False][1], self.marks[True][1]]

    @staticmethod
    def legend_html() -> str:
        """The chart's legend as HTML, beside the chart (bqplot's legend lies over the
        plot area and would take the clicks meant for the columns beneath it)."""
        swatch = '<span style="display:inline-block;width:10px;height:10px;background:{}"></span>'
        return (
            f"{swatch.format(KEPT_COLOR)} kept by the pathway &nbsp; "
            f"{swatch.format(REMOVED_COLOR)} removed"
        )

    def set_data(
        self, kept: np.ndarray, removed: np.ndarray, labels: Sequence[str], log: bool
    ) -> None:
        """Show one stacked bar per site, x labelled by the sites' (distinct) labels, in
        the linear or the log view (both views get the data)."""
        n = len(labels)
        x = np.asarray(labels, dtype=str) if n else np.zeros(0)
        for view, (bars, hits) in self.marks.items():
            rows, base, top = stacked_rows(kept, removed, view)
            if not n:
                rows = np.zeros((2, 0))
            with bars.hold_sync(), hits.hold_sync():
                bars.base = base
                hits.base = base
                bars.x = x
                bars.y = rows
                hits.x = x
                hits.y = np.full(n, top)
        if log != self.log:
            self.log = log
            with self.figure.hold_sync():
                self.figure.marks = self.marks[log]
                self.figure.axes = [self.x_axis, self.y_axes[log]]

    def select(self, index: int) -> None:
        """Mark ``index`` as selected in every mark (-1: none)."""
        value = None if index < 0 else [index]
        for pair in self.marks.values():
            for mark in pair:
                mark.selected = value

    def widgets(self) -> list[widgets.Widget]:
        """Every widget this chart made, for closing."""
        return [
            *self.marks[False],
            *self.marks[True],
            *self.y_axes.values(),
            self.x_axis,
            self.figure,
            self.xs,
            *self.scales.values(),
        ]


__all__ = ["SiteChart", "log_floor", "stacked_rows"]
