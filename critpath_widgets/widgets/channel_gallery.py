"""ChannelGalleryPanel: what one channel of a site responds to.

Data flows one way: :meth:`ChannelGalleryPanel.update` takes a snapshot of what the
explorer shows (:class:`GalleryContext`: picture, selected site, its channels'
contributions); a background thread computes the channel's activation map on the
picture (:func:`critpath_widgets.gallery.activation_map`) and its top-activating
gallery patches (:class:`critpath_widgets.gallery.ChannelGallery`, built once per
gallery and model state and cached), each model pass under the context's lock (the
explorer's compute lock). A newer snapshot or channel supersedes a run: only the latest
one is shown. Errors (a site without a spatial map, ...) are a sentence in the panel.
"""

from __future__ import annotations

import html
import io
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..errors import CritpathError, InputError
from ..gallery import ChannelGallery, Patch, activation_map
from .background import BackgroundRun
from .overlay import AttributionOverlay

log = logging.getLogger(__name__)

#: How many top-activating patches are shown.
TOP_K = 6
#: How many channels the picker lists first, by kept contribution, with that contribution.
TOP_CHANNELS = 5
#: Width in CSS pixels of a thumbnail and of the activation map.
THUMB_WIDTH = 96
MAP_WIDTH = 260


@dataclass
class GalleryContext:
    """What the explorer shows, taken on the kernel's (or worker's) thread."""

    #: identifies the picture and model state the activation map is of
    key: Hashable
    explainer: Any  # the explorer's PathwayExplainer
    x: Any  # (1, C, H, W) model input of the picture on show
    display: Any  # the picture under the overlay (PIL), or None
    site: str  # the selected site's name
    label: str  # its human name
    #: kept contribution of each channel of the site (the picker's order)
    contributions: np.ndarray
    #: identifies the gallery (its pictures and the model state): a new one is built
    #: when it changes
    gallery_key: Hashable
    make_gallery: Callable[[], ChannelGallery]
    lock: Any  # held around each model pass


class ChannelGalleryPanel(BackgroundRun, widgets.VBox):
    """A channel picker, the channel's activation map over the picture on show and
    its :data:`TOP_K` top-activating gallery patches as captioned thumbnails.

    ``context`` returns the explorer's :class:`GalleryContext` (raising a CritpathError
    when there is nothing to show, with the reason).
    """

    def __init__(self, context: Callable[[], GalleryContext], **kwargs: Any) -> None:
        self._context = context
        self._guard = threading.RLock()
        self._thread: threading.Thread | None = None
        self._gen = 0  # the run whose result may be shown
        self._run_key: Hashable | None = None
        self._site: str | None = None  # the site the picker's options are of
        self._options_key: Hashable | None = None
        self._quiet = False
        self._gallery: tuple[Hashable, ChannelGallery] | None = None
        self._gallery_lock = threading.Lock()  # one build at a time, for every run
        self.is_open = False
        #: the patches on show (strongest first), their site and channel
        self.patches: list[Patch] = []
        self.shown: tuple[str, int] | None = None
        self.last_error: BaseException | None = None
        self.picker = widgets.Dropdown(
            options=[],
            description="channel",
            tooltip="The channel shown: the top ones by kept contribution first",
            style={"description_width": "60px"},
            layout=widgets.Layout(width="300px"),
        )
        self.picker.observe(self._on_pick, "value")
        self.message = widgets.HTML("<i>Open this section to see what a channel responds to.</i>")
        self.message.add_class("critpath-gallery-message")
        self.overlay = AttributionOverlay(sign="absolute", display_width=MAP_WIDTH)
        self.overlay.add_class("critpath-gallery-map")
        self.thumbs = widgets.HBox(
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start")
        )
        self.thumbs.add_class("critpath-gallery-thumbs")
        body = widgets.HBox(
            [self.overlay, self.thumbs], layout=widgets.Layout(flex_flow="row wrap", width="100%")
        )
        super().__init__(children=[self.picker, self.message, body], **kwargs)
        self.add_class("critpath-channel-gallery")

    # ------------------------------------------------------------------ public API
    @property
    def channel(self) -> int | None:
        """The channel shown (the picker's value)."""
        return self.picker.value

    @channel.setter
    def channel(self, value: int) -> None:
        values = [v for _, v in self.picker.options]
        if value not in values:
            raise InputError(f"channel {value!r} is not one of the site's 0..{len(values) - 1}")
        self.picker.value = value

    @property
    def map(self) -> np.ndarray:
        """The activation map on show (the site's grid; the overlay upsamples it)."""
        return self.overlay.array

    def set_open(self, is_open: bool) -> None:
        """The section was opened (show the channel) or closed (stop showing)."""
        self.is_open = bool(is_open)
        if self.is_open:
            self.update()
        else:
            with self._guard:
                self._gen += 1
                self._run_key = None

    def update(self, force: bool = False) -> None:
        """Show the picked channel of what the explorer shows, unless that is already on
        show or computing (``force``: again). Ignored while the section is closed."""
        if not self.is_open:
            return
        with self._guard:
            try:
                ctx = self._context()
            except CritpathError as err:
                self._gen += 1
                self._run_key = None
                self._error(err)
                return
            self._fill_picker(ctx)
            channel = self.picker.value
            key = (ctx.key, ctx.site, channel, ctx.gallery_key)
            if key == self._run_key and not force:
                return
            self._gen += 1
            gen, self._run_key = self._gen, key
            self.message.value = (
                f"<i>Computing channel {channel} of {html.escape(ctx.label)}...</i>"
            )
            self._thread = threading.Thread(
                target=self._work, args=(ctx, channel, gen), name="critpath-gallery", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop showing runs and close the panel's widgets."""
        with self._guard:
            self._gen += 1  # invariant: a run of an older generation changes nothing
            self.is_open = False
            thumbs = [c for box in self.thumbs.children for c in (*box.children, box)]
            for w in (*thumbs, self.picker, self.message, self.overlay, self.thumbs):
                w.close()
            for w in self.children:
                w.close()
        super().close()

    # ---------------------------------------------------------------- internals
    def _on_pick(self, _change: dict) -> None:
        if not self._quiet:
            self.update()

    def _fill_picker(self, ctx: GalleryContext) -> None:
        """The site's channels, the top :data:`TOP_CHANNELS` by kept contribution first;
        a new site starts on its top channel, the same site keeps the one picked."""
        c = np.asarray(ctx.contributions, dtype=np.float64)
        options_key = (ctx.site, c.tobytes())  # the same figures: the options stand
        if options_key == self._options_key:
            return
        top = [int(i) for i in np.argsort(-c, kind="stable")[:TOP_CHANNELS]]
        rest = [i for i in range(len(c)) if i not in set(top)]
        options = [(f"{i} (kept {c[i]:.3g})", i) for i in top] + [(str(i), i) for i in rest]
        keep = self.picker.value if ctx.site == self._site else None
        self._quiet = True  # invariant: the picker's own change starts no run here
        try:
            self.picker.options = options
            self.picker.value = keep if keep is not None and keep < len(c) else top[0]
        finally:
            self._quiet = False
        self._site, self._options_key = ctx.site, options_key

    def _gallery_of(self, ctx: GalleryContext) -> ChannelGallery:
        """The cached gallery of ``ctx.gallery_key``, built (once) otherwise."""
        with self._gallery_lock:
            cached = self._gallery
            if cached is not None and cached[0] == ctx.gallery_key:
                return cached[1]
            self._gallery = None  # a gallery of an earlier model or pictures is dropped
            gallery = ctx.make_gallery()
            gallery.site_names  # noqa: B018 - one forward pass per picture, now
            self._gallery = (ctx.gallery_key, gallery)
            return gallery

    def _work(self, ctx: GalleryContext, channel: int, gen: int) -> None:
        """The background run: activation map, then the gallery's top patches."""
        try:
            with ctx.lock:
                amap = activation_map(ctx.explainer, ctx.x, ctx.site, channel)
            if gen != self._gen:
                return
            gallery = self._gallery_of(ctx)
            patches = gallery.top_patches(ctx.site, channel, TOP_K)
        except CritpathError as err:
            if gen == self._gen:
                self._error(err)
            return
        except Exception as err:  # noqa: BLE001 - shown in the panel
            log.exception("channel gallery failed")
            if gen == self._gen:
                self._error(err)
            return
        with self._guard:
            if gen != self._gen:
                return
            self._show(ctx, channel, amap.detach().float().cpu().numpy(), patches)

    def _show(self, ctx: GalleryContext, channel: int, amap: np.ndarray, patches) -> None:
        with self.overlay.hold_sync():
            self.overlay.set_data(image=ctx.display, values=amap)
            self.overlay.label = f"activation of channel {channel}"
            self.overlay.message = ""
        self._set_thumbs([_thumb(p) for p in patches])
        self.patches, self.shown, self.last_error = list(patches), (ctx.site, channel), None
        self.message.value = (
            f"Channel <b>{channel}</b> of <b>{html.escape(ctx.label)}</b>: its activation on "
            f"this picture (left) and the {len(patches)} gallery patches where it responds "
            "most (strongest first)."
        )

    def _set_thumbs(self, boxes: list[widgets.VBox]) -> None:
        """Show ``boxes``; the thumbnails they replace are closed (no widget leaks)."""
        old, self.thumbs.children = self.thumbs.children, boxes
        for box in old:
            for w in (*box.children, box):
                w.close()

    def _error(self, err: BaseException) -> None:
        self.last_error = err
        self.patches, self.shown = [], None
        self._set_thumbs([])
        self.message.value = f"<b>Nothing to show:</b> {html.escape(str(err))}"


def _thumb(p: Patch) -> widgets.VBox:
    """A patch as a PNG thumbnail captioned with its picture's name and the value."""
    buf = io.BytesIO()
    p.image.save(buf, format="PNG")
    image = widgets.Image(value=buf.getvalue(), format="png", width=THUMB_WIDTH)
    caption = widgets.HTML(
        f'<div style="font-size: 11px; line-height: 1.2">{html.escape(p.name)}<br>'
        f"{p.value:.3g}</div>"
    )
    box = widgets.VBox([image, caption], layout=widgets.Layout(margin="0 4px 4px 0"))
    box.add_class("critpath-gallery-thumb")
    return box


__all__ = ["ChannelGalleryPanel", "GalleryContext", "TOP_K"]
