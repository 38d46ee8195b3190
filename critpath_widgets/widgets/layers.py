"""LayerContributions: where along the network the contribution lives, site by site.

An ipywidgets ``VBox`` made of two bqplot figures and an :class:`AttributionOverlay`:

* the **layer chart** (CSS class ``critpath-layer-chart``, :mod:`.layer_chart`): one
  stacked bar per site in call order; the dark part is the contribution kept by the
  pathway, the light part what the pathway removed, so the bar's height is the site's
  total contribution. Sites are named as people read them ("block 3 · ReLU6 #2",
  :func:`critpath_widgets.engine.naming.site_labels`), their module path on hover with
  "kept / total" neurons. A click anywhere in a site's column selects it (trait
  ``selected_site``, -1 = none; settable from Python). A click outside every column
  (bqplot deselects) keeps the selection: only ``selected_site = -1`` clears it, and
  then the channel chart (axes hidden), the details and the map's caption are cleared
  together. The ``log_scale`` trait (the "log scale" toggle) shows the y axis
  logarithmic;
* the **channel chart**: the selected site's per-channel contributions sorted in
  descending order; channels with at least one kept neuron (the pathway's channels)
  in a different colour (:mod:`.channel_chart`). A click on a channel's column is
  reported to the ``on_channel_click`` callbacks (the explorer cycles the channel's
  intervention); ``set_channel_states`` paints removed / forced-in channels;
* an overlay of the selected site's spatial contribution map
  (``explanation.site_map(i)``) over the image, sign "absolute", colormap "inferno":
  conv and channels-last sites on their (H, W), transformer token sites on their
  patch grid (the class token's share of the contribution is in the details text).
  Sites with no map (feature vectors, tokens in partitioned windows) show the
  engine's reason instead (``SiteSummary.grid``).

"Channels" are a site's feature axis: dim 1 of conv outputs, the last dim of token
and channels-last outputs (the engine's layout says which).

Bar heights stay numpy float arrays, which bqplot sends as binary buffers; the site
chart's x values are the sites' labels (strings, distinct by construction).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import traitlets

from ..engine import Explanation
from ..report import layer_bars
from .channel_chart import (
    AS_SELECTED,
    OTHER_CHANNEL_COLOR,
    PATHWAY_CHANNEL_COLOR,
    ChannelChart,
)
from .layer_chart import SiteChart
from .overlay import AttributionOverlay

log = logging.getLogger(__name__)

#: what the channel chart, the map and the details say while no site is selected
NO_SITE_TITLE = "Channels of the selected site"
NO_SITE_LABEL = "site map (no site selected)"
NO_SITE_HELP = "Select a site (click its column in the chart) to see its channels and map."

#: The channel chart shows at most this many channels (the largest ones).
MAX_CHANNELS = 256


def _np(x: Any) -> np.ndarray:
    """Tensor / list / scalar -> float64 numpy array (on the CPU, detached)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _label(s: object) -> str:
    """The site's human name ("block 3 · ReLU6 #2"), or its path where it has none."""
    return str(getattr(s, "label", "") or s.name)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class LayerContributions(widgets.VBox):
    """Contribution per site, the kept part, and the selected site's channels and map.

    Parameters
    ----------
    explanation:
        A :class:`critpath_widgets.Explanation` (or ``None`` for an empty panel).
    image:
        The display image the site maps are painted over (PIL image, array or PNG
        bytes: whatever ``AttributionOverlay.set_data`` accepts), or ``None``.
    sample:
        Which sample of a batched explanation to show.
    """

    selected_site = traitlets.Int(-1, help="index of the selected site, -1 for none")
    """Site whose channels and map are shown (-1: none); a click in its column sets it."""

    log_scale = traitlets.Bool(False, help="show the site chart's y axis logarithmic")
    """Whether the site chart's y axis is logarithmic (small sites become visible)."""

    def __init__(
        self,
        explanation: Explanation | None = None,
        image: Any = None,
        *,
        sample: int = 0,
        **kwargs: Any,
    ) -> None:
        self._explanation = None
        self._image = None
        self._image_sent = False
        self._summary: list = []
        self._sample = int(sample)
        self._syncing = False
        self._channel_order = np.zeros(0, dtype=np.int64)
        self._channel_values = np.zeros(0)
        self._channel_pathway = np.zeros(0, dtype=bool)
        self._map_key: tuple | None = None  # (site, sample, scoring) of the map on show

        # ---- layer chart (visible bars, and the hit bars that take clicks) ------------
        self._bar_tip = widgets.HTML()
        self._chart = SiteChart(self._bar_tip)
        self.layer_figure = self._chart.figure
        for hits in self._chart.hit_marks():
            hits.on_hover(self._on_bar_hover)
            hits.observe(self._on_bars_selected, "selected")
        self.log_toggle = widgets.ToggleButton(
            value=False,
            description="log scale",
            icon="signal",
            tooltip="Logarithmic contribution axis: makes the small sites' bars visible "
            "(below half the smallest site, bars are drawn at that floor).",
            layout=widgets.Layout(width="auto"),
        )
        self.log_toggle.add_class("critpath-log-toggle")
        widgets.link((self.log_toggle, "value"), (self, "log_scale"))

        # ---- channel chart (clickable: interventions) --------------------------
        self._channel_tip = widgets.HTML()
        self._channels = ChannelChart(self._channel_tip, NO_SITE_TITLE)
        self.channel_bars = self._channels.bars
        self.channel_figure = self._channels.figure
        self.channel_hit_bars = self._channels.hits
        self._channels.hits.on_hover(self._on_channel_hover)
        self._channels.on_click(self._on_channel_click)
        self._channel_click: list[Callable[[int, int], None]] = []
        #: per site index: {channel: REMOVED | FORCED}, painted over the channel bars
        self._channel_states: dict[int, dict[int, int]] = {}

        # ---- site map overlay and text -------------------------------------------
        self.overlay = AttributionOverlay(
            colormap="inferno",
            sign="absolute",
            label=NO_SITE_LABEL,
            display_width=260,
            layout=widgets.Layout(flex="0 1 auto", width="276px", max_width="100%"),
        )
        self.overlay.add_class("critpath-site-overlay")
        self.details = widgets.HTML(value=f"<i>{NO_SITE_HELP}</i>")
        self.details.add_class("critpath-layer-details")
        lower = widgets.HBox(
            [self.channel_figure, self.overlay],
            layout=widgets.Layout(align_items="flex-start", width="100%", flex_flow="row wrap"),
        )
        legend = widgets.HTML(SiteChart.legend_html(), layout=widgets.Layout(flex="0 0 auto"))
        legend.add_class("critpath-layer-legend")
        tools = widgets.HBox(
            [self.log_toggle, legend, self.details],
            layout=widgets.Layout(align_items="center", width="100%", flex_flow="row wrap"),
        )
        super().__init__(children=[self.layer_figure, tools, lower], **kwargs)
        self.add_class("critpath-layer-contributions")
        self.update(explanation, image)

    # ------------------------------------------------------------------ public API
    @property
    def explanation(self) -> Explanation | None:
        """The Explanation currently shown (or ``None``)."""
        return self._explanation

    @property
    def summary(self) -> list:
        """``explanation.layer_summary()`` of the shown explanation."""
        return list(self._summary)

    @property
    def bars(self) -> bq.Bars:
        """The site chart's visible stacked bars (of the linear or the log view)."""
        return self._chart.bars

    @property
    def hit_bars(self) -> bq.Bars:
        """The site chart's transparent full-height bars that take clicks and hovers."""
        return self._chart.hits

    def update(self, explanation: Explanation | None = None, image: Any = None) -> None:
        """Redraw for a new explanation and/or image.

        ``image=None`` keeps the current image (pass the same object again freely: the
        image is only re-sent when it is a different object). The selected site is
        kept when it still exists.
        """
        if image is not None and image is not self._image:
            self._image = image
            self._image_sent = False
        self._explanation = explanation
        self._summary = list(explanation.layer_summary(self._sample)) if explanation else []
        n = len(self._summary)
        self._draw_chart()
        if self.selected_site >= n:
            self.selected_site = -1  # observer clears the detail views
        else:
            self._show_site(self.selected_site)

    def _draw_chart(self) -> None:
        """Send the site chart's bars (linear or log, :attr:`log_scale`) and selection."""
        kept, removed = layer_bars(self._summary)
        labels = [_label(s) for s in self._summary]
        self._chart.set_data(kept, removed, labels, self.log_scale)
        self._syncing = True
        try:
            self._chart.select(self.selected_site if self.selected_site < len(labels) else -1)
        finally:
            self._syncing = False

    @traitlets.observe("log_scale")
    def _on_log_scale(self, _change) -> None:
        self._draw_chart()

    def close(self) -> None:
        """Close the panel and every widget it made (figures, marks, scales, overlay)."""
        parts = [
            self.overlay,
            self.details,
            self.log_toggle,
            *self.children[1].children,
            self._bar_tip,
            self._channel_tip,
            *self.children,
            *self._chart.widgets(),
            *self._channels.widgets(),
        ]
        for w in parts:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        super().close()

    # ------------------------------------------------------------------ selection
    @traitlets.validate("selected_site")
    def _validate_selected(self, proposal):
        value = int(proposal["value"])
        if value < -1 or (value != -1 and value >= len(self._summary)):
            raise traitlets.TraitError(
                f"selected_site must be -1 or in [0, {len(self._summary) - 1}], got {value}"
            )
        return value

    @traitlets.observe("selected_site")
    def _on_selected_site(self, change) -> None:
        index = change["new"]
        if not self._syncing:
            self._syncing = True
            try:
                self._chart.select(index)
            finally:
                self._syncing = False
        self._show_site(index)

    def _on_bars_selected(self, change) -> None:
        """A click in the chart (the hit bars' ``selected``, as bqplot's front end sets
        it): the last site clicked is the selection; an empty one (a click outside every
        column) keeps the current selection, re-marked on both marks."""
        if self._syncing:
            return
        sel = change["new"]
        picked = [int(i) for i in np.asarray(sel if sel is not None else []).ravel()]
        picked = [i for i in picked if 0 <= i < len(self._summary)]
        index = picked[-1] if picked else self.selected_site
        self._syncing = True
        try:
            self._chart.select(index)  # single selection, and both marks agree
            self.selected_site = index
        finally:
            self._syncing = False

    def _show_site(self, index: int) -> None:
        if index < 0 or index >= len(self._summary) or self._explanation is None:
            self._channels.set_data(np.zeros(0), np.zeros(0, dtype=bool))
            self._channel_order = np.zeros(0, dtype=np.int64)
            self._channel_values = np.zeros(0)
            self._channel_pathway = np.zeros(0, dtype=bool)
            # (set_data hides the axes: an empty scale would tick "0 0 1 1 1")
            self.channel_figure.title = NO_SITE_TITLE
            self._set_overlay(
                None, "Select a site to see its spatial contribution map.", NO_SITE_LABEL
            )
            self._map_key = None
            self.details.value = (
                f"<i>{NO_SITE_HELP}</i>" if self._summary else "<i>No explanation yet.</i>"
            )
            return
        s = self._summary[index]
        ch_total = _np(s.channel_total).ravel()
        ch_kept = _np(s.channel_kept).ravel()
        if ch_kept.shape != ch_total.shape:
            ch_kept = np.zeros_like(ch_total)
        in_path = self._pathway_channels(index, ch_kept)
        order = np.argsort(-ch_total, kind="stable")
        shown = order[:MAX_CHANNELS]
        vals = ch_total[shown]
        path = in_path[shown]
        self._channel_order = shown
        self._channel_values = vals.copy()
        self._channel_pathway = path.copy()
        self._channels.set_data(vals, path)
        self._paint_channel_states()
        n_ch = len(ch_total)
        more = f"largest {len(shown)} of {n_ch}" if n_ch > len(shown) else f"all {n_ch}"
        name = html.escape(_label(s))
        self.channel_figure.title = f"{_label(s)}: {more} channels"
        frac = s.kept / s.neurons if s.neurons else 0.0
        kept_share = float(s.kept_total) / float(s.total) if float(s.total) > 0 else 0.0
        shape = " x ".join(str(d) for d in s.shape)
        cls = getattr(s, "class_token_total", None)
        cls_txt = ""
        if cls is not None and float(s.total) > 0:
            cls_txt = (
                f" The class token holds {cls / float(s.total):.1%} of the site's "
                "contribution (not on the patch grid, so not in the map)."
            )
        self.details.value = (
            f"<b>{name}</b> (site {index}, <code>{html.escape(str(s.name))}</code>, {shape}): "
            f"kept {s.kept:,} of {s.neurons:,} neurons ({frac:.1%}); "
            f"contribution kept {_fmt(float(s.kept_total))} of {_fmt(float(s.total))} "
            f"({kept_share:.0%}); {int(in_path.sum())} of {n_ch} channels in the "
            f"pathway.{cls_txt}"
        )
        grid = getattr(s, "grid", None)
        if grid is not None and grid.hw is None:  # the engine says why there is none
            self._set_overlay(
                None, f"{_label(s)} ({shape}) has no spatial map: {grid.reason}.", _label(s)
            )
            self._map_key = None
            return
        label = f"{_label(s)} map"
        if grid is not None and grid.kind == "tokens":
            label += f" ({grid.hw[0]} x {grid.hw[1]} patches)"
        # the map depends on the scoring, not on the sparsity: a slider move re-sends nothing
        key = (index, self._sample, getattr(self._explanation, "scoring", self._explanation))
        if key == self._map_key and not self.overlay.message:
            return
        try:
            site_map = self._explanation.site_map(index, sample=self._sample)
        except Exception as err:  # noqa: BLE001 - show it, keep the panel usable
            log.debug("site_map(%d) failed", index, exc_info=True)
            self._set_overlay(None, f"No spatial map for {_label(s)}: {err}", _label(s))
            self._map_key = None
            return
        self._set_overlay(_np(site_map).astype(np.float32), "", label=label)
        self._map_key = key

    def _pathway_channels(self, index: int, ch_kept: np.ndarray) -> np.ndarray:
        """Boolean per channel: does the channel hold at least one kept neuron?"""
        try:
            return self._explanation.pathway.kept_channels(index, self._sample).cpu().numpy()
        except Exception:  # noqa: BLE001 - fall back on the summary
            pass
        return ch_kept > 0

    def _set_overlay(self, values, message: str, label: str | None = None) -> None:
        ov = self.overlay
        with ov.hold_sync():
            if values is None:
                if ov.values:
                    ov.values = b""
                    ov.shape = (0, 0)
                if not self._image_sent and self._image is not None:
                    ov.set_data(image=self._image)
                    self._image_sent = True
            elif not self._image_sent and self._image is not None:
                ov.set_data(image=self._image, values=values)
                self._image_sent = True
            else:
                ov.set_data(values=values)
            ov.message = message
            if label is not None:
                ov.label = label

    # ------------------------------------------------------------------ hover
    def _on_bar_hover(self, _mark, event) -> None:
        index = (event or {}).get("data", {}).get("index")
        if index is None or not 0 <= int(index) < len(self._summary):
            return
        s = self._summary[int(index)]
        self._bar_tip.value = (
            f"<b>{html.escape(_label(s))}</b> (site {int(index)})<br>"
            f"<code>{html.escape(str(s.name))}</code><br>"
            f"neurons kept {s.kept:,} / {s.neurons:,}<br>"
            f"contribution kept {_fmt(float(s.kept_total))} / {_fmt(float(s.total))}"
        )

    def _on_channel_hover(self, _mark, event) -> None:
        rank = (event or {}).get("data", {}).get("index")
        if rank is None or not 0 <= int(rank) < len(self._channel_order):
            return
        ch = int(self._channel_order[int(rank)])
        value = float(self._channel_values[int(rank)])
        in_path = bool(self._channel_pathway[int(rank)])
        state = self._channel_states.get(self.selected_site, {}).get(ch, AS_SELECTED)
        hint = ""
        if self._channel_click:  # someone acts on clicks: say what the next one does
            now = ("as selected", "removed", "forced in")[state]
            nxt = ("remove it", "force it in", "restore it")[state]
            hint = f"<br>{now}; click to {nxt}"
        self._channel_tip.value = (
            f"<b>channel {ch}</b> (rank {int(rank)})<br>contribution {_fmt(value)}<br>"
            + ("in the pathway" if in_path else "no kept neuron")
            + hint
        )

    # ------------------------------------------------------------------ interventions
    def on_channel_click(self, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(site index, channel)`` when a bar of the channel chart is
        clicked (the panel only reports it; the owner decides what it means)."""
        self._channel_click.append(callback)

    def _on_channel_click(self, rank: int) -> None:
        site = self.selected_site
        if site < 0 or not 0 <= rank < len(self._channel_order):
            return
        channel = int(self._channel_order[rank])
        for callback in self._channel_click:
            callback(site, channel)

    def set_channel_states(self, states: dict[int, dict[int, int]]) -> None:
        """Show the intervention state of channels: ``{site index: {channel: state}}``
        with the state codes of :mod:`.channel_chart` (absent: as selected)."""
        self._channel_states = {int(k): dict(v) for k, v in states.items()}
        self._paint_channel_states()

    def _paint_channel_states(self) -> None:
        marks = self._channel_states.get(self.selected_site, {})
        codes = [marks.get(int(c), AS_SELECTED) for c in self._channel_order]
        self._channels.set_states(np.asarray(codes, dtype=np.int8))

    def channel_states(self) -> np.ndarray:
        """The state code per rank of the channel chart on show."""
        return self._channels.states()

    def channel_data(self) -> dict[str, np.ndarray]:
        """The channel chart's data: channel ids in descending order of contribution,
        their contributions, and whether each is a pathway channel."""
        return {
            "channels": self._channel_order.copy(),
            "values": self._channel_values.copy(),
            "pathway": self._channel_pathway.copy(),
        }


__all__ = ["OTHER_CHANNEL_COLOR", "PATHWAY_CHANNEL_COLOR", "LayerContributions"]
