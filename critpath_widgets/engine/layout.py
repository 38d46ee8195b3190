"""Flat layout of all sites' neurons: one (N, total) buffer, per-site views into it.

Scores and masks of every site live in one contiguous row per sample, so global
selection runs over a single tensor with no concatenation, while each site still
sees a tensor shaped like its output. Each site also says where its features sit
(dim 1, or the last dim for transformer and channels-last sites) and how it maps
onto the input's plane (:meth:`SiteLayout.grid`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import InputError


class SiteGrid(NamedTuple):
    """How one site's output (per sample) maps onto the input's plane.

    ``kind`` is "image" for (C, H, W), "channels_last" for (H, W, C), "tokens" for
    (T, D) whose tokens form a square patch grid (T = g * g, or T = g * g + 1 with a
    leading class token, which the map leaves out), and "none" where the site has no
    spatial map (``reason`` says why).
    """

    kind: str
    #: (H, W) of the map; None for kind "none"
    hw: tuple[int, int] | None = None
    #: tokens: the first token is a class token (not on the grid, left out of the map)
    class_token: bool = False
    reason: str = ""

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """(H, W) map of one sample's site values ``x`` (the site's shape per sample):
        the values summed over the features at each position."""
        if self.hw is None:
            raise InputError(f"no spatial map: {self.reason}")
        if self.kind == "image":
            return x.sum(dim=0)
        s = x.sum(dim=-1)
        return (s[1:] if self.class_token else s).reshape(self.hw)


def _fits(hw: tuple[int, int], image: tuple[int, int] | None) -> bool:
    """Whether an (h, w) grid can cover an image of that size: the aspect ratios agree
    to within one cell (strides round sizes); any grid fits when the size is unknown."""
    if image is None:
        return True
    (h, w), (ih, iw) = hw, image
    return abs(h * iw - w * ih) <= max(ih, iw)


@dataclass(frozen=True)
class SiteLayout:
    """Per-sample shapes of the sites and where each one sits in a flat row."""

    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    total: int
    #: per site, whether its features are on the last axis (tokens (T, D), channels
    #: last (H, W, C)) rather than the first (C, H, W); () means all False
    channel_last: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not self.channel_last:
            object.__setattr__(self, "channel_last", (False,) * len(self.shapes))
        elif len(self.channel_last) != len(self.shapes):
            raise ValueError(
                f"channel_last has {len(self.channel_last)} entries for {len(self.shapes)} sites"
            )

    @classmethod
    def from_tensors(
        cls, tensors: Sequence[torch.Tensor], channel_last: Sequence[bool] | None = None
    ) -> SiteLayout:
        """Layout of site outputs (each shaped (N, ...)); ``channel_last`` per site
        (see :func:`.axes.feature_axis_last`), all False when None."""
        shapes = tuple(tuple(t.shape[1:]) for t in tensors)
        sizes = tuple(int(torch.Size(s).numel()) for s in shapes)
        offsets = []
        o = 0
        for n in sizes:
            offsets.append(o)
            o += n
        last = tuple(bool(b) for b in channel_last) if channel_last is not None else ()
        return cls(shapes, sizes, tuple(offsets), o, last)

    def __len__(self) -> int:
        return len(self.shapes)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-site views (N, *shape) of a flat (N, total) tensor; no copies."""
        n = flat.shape[0]
        return [
            flat[:, o : o + s].view(n, *shape)
            for o, s, shape in zip(self.offsets, self.sizes, self.shapes, strict=True)
        ]

    def unversioned_views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`views` as separate tensors over the same memory, each with a version
        counter of its own: writing into one site's view does not mark the others (which
        autograd may have saved) as modified."""
        storage = flat.untyped_storage()
        return [
            torch.empty(0, dtype=flat.dtype, device=flat.device).set_(
                storage, v.storage_offset(), v.shape, v.stride()
            )
            for v in self.views(flat)
        ]

    def slice(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """The (N, size_i) columns of site i in a flat tensor."""
        o = self.offsets[i]
        return flat[:, o : o + self.sizes[i]]

    def channels(self) -> tuple[int, ...]:
        """Channels per site: the size of its feature axis (dim 1 of the output, or the
        last dim where ``channel_last``); a 1-D feature vector counts each feature."""
        return tuple(
            (s[-1] if last else s[0]) if s else 1
            for s, last in zip(self.shapes, self.channel_last, strict=True)
        )

    def by_channel(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Site i's values ``x`` (..., size_i) as a (..., C, positions) view: features
        first whatever the site's layout (a transposed view, no copy, where channels
        are last), so that reducing or writing dim -1 covers one whole channel."""
        shape = self.shapes[i]
        if not shape:
            return x.unsqueeze(-1)
        if self.channel_last[i]:
            return x.unflatten(-1, (-1, shape[-1])).transpose(-1, -2)
        return x.unflatten(-1, (shape[0], -1))

    def grid(self, i: int, image: tuple[int, int] | None = None) -> SiteGrid:
        """How site i maps onto an input plane of size ``image`` (H, W), if known.

        (C, H, W) maps as it is; (H, W, C) when (H, W) has the image's aspect ratio
        (MaxViT's (windows, tokens per window, C) does not: it has no map); (T, D)
        tokens when T, else T - 1 (a leading class token), is a square number.
        """
        shape, last = self.shapes[i], self.channel_last[i]
        dims = " x ".join(map(str, shape))
        if len(shape) <= 1:
            return SiteGrid("none", reason=f"a feature vector ({dims or 1} features)")
        if len(shape) == 3 and not last:
            return SiteGrid("image", (shape[1], shape[2]))
        if len(shape) == 3:
            if _fits(shape[:2], image):
                return SiteGrid("channels_last", (shape[0], shape[1]))
            return SiteGrid(
                "none",
                reason=f"tokens in partitioned windows ({shape[0]} x {shape[1]} tokens "
                f"of {shape[2]} features do not lie on the input's grid)",
            )
        if len(shape) == 2 and last:
            t = shape[0]
            for cls in (False, True):
                g = math.isqrt(max(t - cls, 0))
                if g > 0 and g * g == t - cls and _fits((g, g), image):
                    return SiteGrid("tokens", (g, g), class_token=cls)
            return SiteGrid(
                "none", reason=f"{t} tokens of {shape[1]} features that form no patch grid"
            )
        if len(shape) == 2:
            return SiteGrid("none", reason=f"a 1-D signal ({dims}: channels x length)")
        return SiteGrid("none", reason=f"{len(shape)}-D features per sample ({dims})")
