"""Greedy: remove a small share of the neurons at a time, re-scoring the rest by NeuronMCT."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ...errors import InputError, OptionError
from .. import passes
from ..pathway import keep_count, topk_mask
from .base import Job, Scorer


class Greedy(Scorer):
    """Rounds of removal: each drops the ``step_fraction`` of neurons (of each group)
    that score lowest by NeuronMCT on the network pruned so far."""

    description = "greedy removal by NeuronMCT, step_fraction of the neurons per round"
    options = {"step_fraction": 0.01}
    path_dependent = True  # the rounds stop at the sparsity asked for

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """``step_fraction`` is a number in (0, 1)."""
        f = opts["step_fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise InputError(f"step_fraction must be in (0, 1), got {f!r}")

    def score(self, job: Job) -> torch.Tensor:
        """A ranking key: removed neurons get their removal round (earliest lowest), the
        survivors rank above every removed one by their last score, so selecting from
        the key at this sparsity gives the greedy pathway (and at a lower sparsity the
        greedy pathway of that round)."""
        sparsity, scope, granularity = job.selection
        if granularity != "neuron":
            raise OptionError("greedy selection supports granularity='neuron' only")
        st, x, first = job.st, job.x, job.first
        contrib, layout, tgt = first.contrib, first.layout, first.target
        frac = float(job.opts["step_fraction"])
        if scope == "global":
            groups = [(0, layout.total)]
        else:
            groups = list(zip(layout.offsets, layout.sizes, strict=True))
        targets = [keep_count(size, sparsity) for _, size in groups]
        steps = [max(1, round(frac * size)) for _, size in groups]
        kept_now = [size for _, size in groups]
        rounds = max(
            math.ceil((size - t) / step) if size > t else 0
            for (_, size), t, step in zip(groups, targets, steps, strict=True)
        )
        key = torch.full_like(contrib, float(rounds))
        mask = torch.ones_like(contrib, dtype=torch.bool)
        scores = contrib
        for r in range(rounds):
            if r > 0:
                scores = passes.masked_scores(st, x, tgt, layout.views(mask), layout)
            new_mask = mask.clone()
            for gi, (o, size) in enumerate(groups):
                keep = max(targets[gi], kept_now[gi] - steps[gi])
                if keep == kept_now[gi]:
                    continue
                s = torch.where(mask[:, o : o + size], scores[:, o : o + size], -math.inf)
                new_mask[:, o : o + size] = topk_mask(s, keep)
                kept_now[gi] = keep
            removed = mask & ~new_mask
            key[removed] = float(r)
            mask = new_mask
            if job.progress is not None:
                job.progress(r + 1, rounds)
        if rounds:
            scores = passes.masked_scores(st, x, tgt, layout.views(mask), layout)
        # survivors: rounds + their last score squashed into [0, 1)
        top = scores.amax(dim=1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
        return torch.where(mask, float(rounds) + 0.5 * scores / top, key)
