"""The explorer's side of the channel gallery: a snapshot of the picture and site on show.

:func:`gallery_context` names the picture, the layer panel's selected site and the
model state (how often the explorer's ModelWatch saw the model change), so the panel
computes again exactly when one of them changes while its section is open; the
gallery itself is keyed by its pictures and the model state, so a model change drops
it. :class:`GalleryMixin` gives the explorer :meth:`~GalleryMixin.set_gallery`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ...errors import InputError
from ...gallery import ChannelGallery
from ..channel_gallery import ChannelGalleryPanel, GalleryContext
from .panel_link import shown_entry, weak_context


class _LockedActivations:
    """The explainer's ``activations`` under the explorer's compute lock, one picture at
    a time, so that building a gallery never holds the explorer up for long."""

    def __init__(self, explainer: Any, lock: Any) -> None:
        self._explainer, self._lock = explainer, lock

    def activations(self, x: Any) -> Any:
        """One forward pass with the activations recorded."""
        with self._lock:
            return self._explainer.activations(x)


def gallery_context(w: Any) -> GalleryContext:
    """The panel's context from explorer ``w`` (InputError with the reason if there is
    nothing to show)."""
    entry = shown_entry(w)
    session = w._session
    summary, index = w.layers.summary, w.layers.selected_site
    if not summary:
        raise InputError("a baseline has no pathway sites: pick a pathway method")
    if not 0 <= index < len(summary):
        raise InputError("select a site in the layer chart above")
    s = summary[index]
    if s.grid is not None and s.grid.hw is None:
        raise InputError(f"site {s.label or s.name!r} has no spatial map ({s.grid.reason})")
    changes = session.stats.get("model_changed", 0)  # ModelWatch: a model change counts
    source, generation = w._gallery_source
    explainer, preprocess, crop = session.explainer, session.preprocess, session.crop
    if preprocess is None:
        raise InputError("the gallery needs a preprocess (PIL image -> tensor)")
    lock = session.compute_lock

    def make() -> ChannelGallery:
        return ChannelGallery(
            _LockedActivations(explainer, lock),  # type: ignore[arg-type]
            source,
            preprocess=preprocess,
            crop=crop,
        )

    return GalleryContext(
        key=(entry.id, changes),
        explainer=explainer,
        x=entry.x,
        display=entry.display,
        site=s.name,
        label=s.label or s.name,
        contributions=np.asarray(s.channel_kept.detach().cpu().numpy(), dtype=np.float64),
        gallery_key=(generation, changes),
        make_gallery=make,
        lock=lock,
    )


def attach_gallery(w: Any) -> tuple[ChannelGalleryPanel, widgets.Accordion]:
    """Make the explorer's channel gallery, in a collapsed section that computes when
    opened and follows the selected site and each result shown while open."""
    w._gallery_source = (None, 0)  # (pictures, generation): the sample photos at first
    context = weak_context(w, gallery_context)

    panel = ChannelGalleryPanel(context)
    section = widgets.Accordion([panel], selected_index=None)
    section.set_title(0, "What does a channel respond to: its map and top gallery patches")
    section.add_class("critpath-gallery-section")
    section.observe(lambda c: panel.set_open(c["new"] == 0), "selected_index")
    w.message.observe(lambda _c: panel.update(), "value")  # each result ends with one
    w.layers.observe(lambda _c: panel.update(), "selected_site")
    return panel, section


class GalleryMixin:
    """The explorer's gallery pictures (:meth:`set_gallery`)."""

    _gallery_source: tuple[Any, int]
    gallery: ChannelGalleryPanel

    def set_gallery(self, images: Sequence[Any] | str | Path | None = None) -> None:
        """Take the gallery's pictures: a folder, a list of PIL images or paths, or
        None for the sample photos (checked now; InputError if unusable)."""
        from ...gallery import gallery_pictures

        # decoded now, once: InputError for a missing folder or a bad item
        pictures = None if images is None else gallery_pictures(images)
        self._gallery_source = (pictures, self._gallery_source[1] + 1)
        self.gallery.update()


__all__ = ["GalleryMixin", "attach_gallery", "gallery_context"]
