"""What a channel responds to: its activation map on a picture, and its top-activating
patches over a gallery of pictures.

A pathway says which channels carry the answer; this says what those channels look
for. :class:`ChannelGallery` runs one forward pass per gallery picture (the sample
photos by default) and keeps, for every site and channel, the largest activation in
each picture and where it is (a few numbers per channel, not the activations), so that
any channel's thumbnails afterwards cost no model call. No widget library is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .engine import PathwayExplainer
from .engine.explainer import SiteActivations
from .engine.interventions import site_index
from .engine.layout import SiteGrid
from .errors import InputError

#: The files a gallery folder's pictures are read from.
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
#: A patch is this many site-grid cells wide, around the position of the activation...
PATCH_CELLS = 3
#: ... and at least this share of the picture's shorter side.
PATCH_MIN_SHARE = 0.125


def channel_maps(acts: SiteActivations, i: int, sample: int = 0) -> torch.Tensor:
    """(C, H, W) spatial maps of every channel of site ``i`` (class token left out);
    InputError for a site without a spatial map."""
    layout = acts.layout
    grid = layout.grid(i, acts.input_size)
    if grid.hw is None:
        raise InputError(f"site {acts.names[i]!r} has no spatial map ({grid.reason})")
    flat = acts.outputs[i][sample].reshape(1, -1)
    per_channel = layout.by_channel(flat, i)[0]  # (C, positions)
    if grid.class_token:
        per_channel = per_channel[:, 1:]
    return per_channel.reshape(-1, *grid.hw)


def activation_map(
    explainer: PathwayExplainer, x: torch.Tensor, site: str | int, channel: int
) -> torch.Tensor:
    """(H, W) activation of one channel of ``site`` on the input ``x`` (1, C, H, W), on
    the site's own grid (upsample it to show it over the picture)."""
    acts = explainer.activations(x)
    i = site_index(site, acts.names)
    maps = channel_maps(acts, i)
    if not 0 <= channel < maps.shape[0]:
        raise InputError(f"channel {channel} out of range: site has {maps.shape[0]} channels")
    return maps[channel]


@dataclass(frozen=True)
class Patch:
    """One top-activating patch: where in which gallery picture, and how strong."""

    #: the picture's index in the gallery and its name
    index: int
    name: str
    #: the channel's largest activation in the picture, and its cell on the site's grid
    value: float
    cell: tuple[int, int]
    #: (left, top, right, bottom) of the patch in the picture the model sees, in pixels
    box: tuple[int, int, int, int]
    #: the patch, cut from the picture the model sees
    image: Image.Image


class ChannelGallery:
    """Top-activating patches per channel over a gallery of pictures.

    ``images``: None (the sample photos), or PIL images, paths, or a folder of pictures.
    ``preprocess`` makes the model input from a picture, ``crop`` the picture the model
    sees (both from the bundle for the default model). Computed once, on first use.
    """

    def __init__(
        self,
        explainer: PathwayExplainer,
        images: Sequence[Any] | str | Path | None = None,
        *,
        preprocess: Callable[[Image.Image], torch.Tensor],
        crop: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        self.explainer = explainer
        self.preprocess = preprocess
        self.crop = crop
        self._pictures = gallery_pictures(images)
        #: per site, (pictures, C) largest activation and (pictures, C) flat cell index
        self._best: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._grids: list[SiteGrid] = []
        self._names: list[str] = []
        self._views: list[Image.Image] = []

    @property
    def names(self) -> list[str]:
        """The gallery pictures' names."""
        return [n for n, _ in self._pictures]

    @property
    def site_names(self) -> list[str]:
        """The sites, in call order (after the gallery was computed)."""
        self._compute()
        return list(self._names)

    def top_patches(self, site: str | int, channel: int, k: int = 6) -> list[Patch]:
        """The ``k`` gallery pictures where ``channel`` of ``site`` responds most, each
        with the patch around its strongest position, strongest first."""
        self._compute()
        assert self._best is not None
        i = site_index(site, self._names)
        best, where = self._best[i]
        if not 0 <= channel < best.shape[1]:
            raise InputError(f"channel {channel} out of range: site has {best.shape[1]} channels")
        order = torch.argsort(best[:, channel], descending=True, stable=True)[: max(int(k), 0)]
        return [self._patch(int(p), i, channel) for p in order.tolist()]

    def _patch(self, p: int, i: int, channel: int) -> Patch:
        best, where = self._best[i]  # type: ignore[index]
        h, w = self._grids[i].hw  # type: ignore[misc]
        cell = divmod(int(where[p, channel]), w)
        view = self._views[p]
        box = patch_box(cell, (h, w), view.size)
        return Patch(p, self._pictures[p][0], float(best[p, channel]), cell, box, view.crop(box))

    def _compute(self) -> None:
        """One forward pass per picture: per site and channel, the largest activation
        and its cell (sites without a spatial map are skipped: no patch to show)."""
        if self._best is not None:
            return
        per_site: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for _, picture in self._pictures:
            view = self.crop(picture) if self.crop is not None else picture
            x = self.preprocess(picture)[None]
            acts = self.explainer.activations(x)
            if not self._names:
                self._names = list(acts.names)
                size = tuple(x.shape[-2:])
                self._grids = [acts.layout.grid(i, size) for i in range(len(acts.names))]
            size = (int(x.shape[-1]), int(x.shape[-2]))  # PIL's (width, height)
            self._views.append(view if view.size == size else view.resize(size))
            row = []
            for i, grid in enumerate(self._grids):
                if grid.hw is None:
                    row.append((torch.empty(0), torch.empty(0, dtype=torch.long)))
                    continue
                maps = channel_maps(acts, i).flatten(1)  # (C, cells)
                row.append(maps.max(dim=1))
            per_site.append(row)
        self._best = []
        for i in range(len(self._grids)):
            values = torch.stack([r[i][0] for r in per_site]) if self._grids[i].hw else None
            cells = torch.stack([r[i][1] for r in per_site]) if self._grids[i].hw else None
            self._best.append((values, cells))  # type: ignore[arg-type]


def patch_box(
    cell: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) pixels of the patch around ``cell`` of an (h, w)
    grid laid over a picture of ``size`` (width, height): :data:`PATCH_CELLS` cells
    wide, at least :data:`PATCH_MIN_SHARE` of the shorter side, inside the picture."""
    (r, c), (h, w), (width, height) = cell, grid, size
    cy, cx = (r + 0.5) * height / h, (c + 0.5) * width / w
    side = max(PATCH_CELLS * max(height / h, width / w), PATCH_MIN_SHARE * min(width, height))
    side = min(side, width, height)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + int(round(side)), top + int(round(side))


def gallery_pictures(images: Sequence[Any] | str | Path | None) -> list[tuple[str, Image.Image]]:
    """(name, RGB picture) pairs from None (the sample photos), a folder, or a list of
    PIL images / paths / (name, PIL image) pairs (what this returns: decoded once)."""
    from .models import sample_image, sample_images

    if images is None:
        return [(n, sample_image(n)) for n in sample_images()]
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise InputError(f"gallery folder {str(folder)!r} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
        if not files:
            raise InputError(f"gallery folder {str(folder)!r} holds no .png/.jpg pictures")
        images = files
    out = []
    for j, item in enumerate(images):
        if isinstance(item, Image.Image):
            out.append((f"picture {j}", item.convert("RGB")))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Image.Image):
            out.append((str(item[0]), item[1].convert("RGB")))
        elif isinstance(item, (str, Path)) and Path(item).is_file():
            with Image.open(item) as im:
                out.append((Path(item).name, im.convert("RGB")))
        else:
            raise InputError(f"gallery item {j} is not a PIL image or a picture file: {item!r}")
    if not out:
        raise InputError("the gallery is empty")
    return out


__all__ = ["ChannelGallery", "Patch", "activation_map", "channel_maps", "patch_box"]
