"""Flat layout of all sites' neurons: one (N, total) buffer, per-site views into it.

Scores and masks of every site live in one contiguous row per sample, so global
selection runs over a single tensor with no concatenation, while each site still
sees a tensor shaped like its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SiteLayout:
    """Per-sample shapes of the sites and where each one sits in a flat row."""

    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    total: int

    @classmethod
    def from_tensors(cls, tensors: Sequence[torch.Tensor]) -> SiteLayout:
        """Layout of site outputs (each shaped (N, ...))."""
        shapes = tuple(tuple(t.shape[1:]) for t in tensors)
        sizes = tuple(int(torch.Size(s).numel()) for s in shapes)
        offsets = []
        o = 0
        for n in sizes:
            offsets.append(o)
            o += n
        return cls(shapes, sizes, tuple(offsets), o)

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
        """Channels per site: dim 1 of the output (a 1-D feature vector counts each feature)."""
        return tuple(s[0] if s else 1 for s in self.shapes)
