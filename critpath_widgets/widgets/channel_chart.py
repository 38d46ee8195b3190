"""The layer panel's channel chart: a site's channels by contribution, clickable.

Marks on one pair of scales, drawn in this order:

* the stacked bars (pathway channel / no kept neuron), no interaction;
* two state marks, one per intervention state ("removed", "forced in"), whose bars
  span the chart's height where the channel is in that state and are 0 elsewhere: a
  translucent column of the state's colour over the channel (a bar may be a pixel
  wide and tall); every mark has a bar at every rank, so bqplot gives all marks the
  same bar widths;
* two marker marks (a red cross per removed channel, a green triangle per forced-in
  one) at the top of the channel's bar: with hundreds of channels a bar is a pixel or
  two wide, so the column alone is hard to see;
* transparent full-height *hit bars*, one per rank, which take clicks and hovers (a
  channel's bar may be a pixel tall). bqplot's front end sets their ``selected`` on a
  click; the chart turns that into a callback with the clicked rank and clears it, so
  that clicking the same bar again is a new click.
"""

from __future__ import annotations

from collections.abc import Callable

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ..report import KEPT_COLOR

PATHWAY_CHANNEL_COLOR = KEPT_COLOR
OTHER_CHANNEL_COLOR = "#8da0cb"
#: intervention state codes per channel (what :meth:`ChannelChart.set_states` takes)
AS_SELECTED, REMOVED, FORCED = 0, 1, 2
#: fill and outline of the state marks (the legend's swatches)
REMOVED_STYLE = ("#e57373", "#d32f2f")
FORCED_STYLE = ("#66bb6a", "#1b5e20")
#: opacity of the state columns
STATE_OPACITY = 0.55


def _state_mark(xs: bq.Scale, ys: bq.Scale, style: tuple[str, str], label: str) -> bq.Bars:
    """Bars painting the channels in one intervention state (outlined)."""
    _fill, stroke = style
    return bq.Bars(
        x=np.zeros(0),
        y=np.zeros(0),
        scales={"x": xs, "y": ys},
        colors=[stroke],
        opacities=[STATE_OPACITY],
        padding=0.0,
        labels=[label],
    )


def _marker_mark(xs: bq.Scale, ys: bq.Scale, color: str, marker: str) -> bq.Scatter:
    """Markers on the bars of the channels in one intervention state."""
    return bq.Scatter(
        x=np.zeros(0),
        y=np.zeros(0),
        scales={"x": xs, "y": ys},
        colors=[color],
        marker=marker,
        default_size=90,
        stroke="white",
    )


class ChannelChart:
    """The bqplot figure of the channel chart (see the module docstring)."""

    def __init__(self, tooltip: widgets.Widget, title: str) -> None:
        self.xs = bq.LinearScale(allow_padding=False)  # the domain is set per site
        self.ys = bq.LinearScale(min=0.0)
        self.bars = bq.Bars(
            x=np.zeros(0),
            y=np.zeros((2, 0)),
            scales={"x": self.xs, "y": self.ys},
            type="stacked",
            colors=[PATHWAY_CHANNEL_COLOR, OTHER_CHANNEL_COLOR],
            labels=["pathway channel", "no kept neuron"],
            display_legend=True,
            padding=0.05,
        )
        self.removed = _state_mark(self.xs, self.ys, REMOVED_STYLE, "removed")
        self.forced = _state_mark(self.xs, self.ys, FORCED_STYLE, "forced in")
        self.markers = {
            REMOVED: _marker_mark(self.xs, self.ys, REMOVED_STYLE[1], "cross"),
            FORCED: _marker_mark(self.xs, self.ys, FORCED_STYLE[1], "triangle-up"),
        }
        # invariant: one hit bar per rank, full height, no padding
        self.hits = bq.Bars(
            x=np.zeros(0),
            y=np.zeros(0),
            scales={"x": self.xs, "y": self.ys},
            colors=["black"],
            opacities=[0.0],
            padding=0.0,
            interactions={"click": "select", "hover": "tooltip"},
            selected_style={"opacity": 0.0},
            tooltip=tooltip,
        )
        self._on_click: list[Callable[[int], None]] = []
        self._clearing = False
        self.hits.observe(self._on_selected, "selected")
        self.values = np.zeros(0)
        self._states = np.zeros(0, dtype=np.int8)
        self.x_axis = bq.Axis(scale=self.xs, label="channel rank", num_ticks=5, tick_format="d")
        self.y_axis = bq.Axis(scale=self.ys, side="left", label="contribution", tick_format="~s")
        self.figure = bq.Figure(
            marks=[self.bars, self.removed, self.forced, *self.markers.values(), self.hits],
            axes=[self.x_axis, self.y_axis],
            title=title,
            legend_location="top-right",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 10},
            layout=widgets.Layout(width="60%", min_width="min(280px, 100%)", height="260px"),
        )
        self.figure.add_class("critpath-channel-chart")

    def on_click(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(rank)`` when the user clicks the bar of that rank."""
        self._on_click.append(callback)

    def _on_selected(self, change: dict) -> None:
        """bqplot's click (``selected`` set by the front end): report it, then clear."""
        if self._clearing:
            return
        sel = change["new"]
        picked = [int(i) for i in np.asarray(sel if sel is not None else []).ravel()]
        picked = [i for i in picked if 0 <= i < len(self.values)]
        self._clearing = True
        try:
            self.hits.selected = None
        finally:
            self._clearing = False
        if picked:
            for callback in self._on_click:
                callback(picked[-1])

    def set_data(self, values: np.ndarray, pathway: np.ndarray) -> None:
        """Show one bar per rank: ``values`` (descending), pathway channels coloured."""
        n = len(values)
        self.values = np.asarray(values, dtype=np.float64).copy()
        y = np.vstack([np.where(pathway, values, 0.0), np.where(pathway, 0.0, values)])
        x = np.arange(n, dtype=np.float64)
        top = float(values.max()) if n and values.max() > 0 else 1.0
        # a fixed x domain (the markers' sizes would otherwise widen it), with room for
        # a marker on the first and the last bar
        pad = 0.5 + 0.02 * n
        with self.xs.hold_sync():
            self.xs.min = -pad if n else None
            self.xs.max = n - 1 + pad if n else None
        with self.bars.hold_sync(), self.hits.hold_sync():
            self.bars.x = x
            self.bars.y = y if n else np.zeros((2, 0))
            self.hits.x = x
            self.hits.y = np.full(n, top)
        self.set_states(np.zeros(n, dtype=np.int8))
        for axis in (self.x_axis, self.y_axis):
            axis.visible = n > 0

    def set_states(self, states: np.ndarray) -> None:
        """Paint each rank's intervention state (:data:`AS_SELECTED`, :data:`REMOVED`,
        :data:`FORCED`) over its bar."""
        n = len(self.values)
        states = np.asarray(states, dtype=np.int8)[:n]
        self._states = states.copy()
        x = np.arange(n, dtype=np.float64)
        top = float(self.values.max()) if n and self.values.max() > 0 else 1.0
        for mark, code in ((self.removed, REMOVED), (self.forced, FORCED)):
            with mark.hold_sync():
                mark.x = x
                mark.y = np.where(states == code, top, 0.0)
            at = np.flatnonzero(states == code)
            with self.markers[code].hold_sync():
                self.markers[code].x = at.astype(np.float64)
                self.markers[code].y = self.values[at]

    def states(self) -> np.ndarray:
        """The state code per rank on show."""
        return self._states.copy()

    def widgets(self) -> list[widgets.Widget]:
        """Every widget this chart made, for closing."""
        return [
            self.bars,
            self.removed,
            self.forced,
            *self.markers.values(),
            self.hits,
            self.x_axis,
            self.y_axis,
            self.figure,
            self.xs,
            self.ys,
        ]


__all__ = [
    "AS_SELECTED",
    "FORCED",
    "OTHER_CHANNEL_COLOR",
    "PATHWAY_CHANNEL_COLOR",
    "REMOVED",
    "ChannelChart",
]
