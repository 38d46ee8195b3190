"""Random scores: a baseline pathway, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...errors import InputError
from .base import Job, Scorer


class RandomScores(Scorer):
    """Uniform random scores from a CPU generator seeded with the ``seed`` option."""

    description = "uniform random scores (a baseline), seeded"
    options = {"seed": 0}

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """``seed`` is an integer."""
        if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int):
            raise InputError(f"seed must be an integer, got {opts['seed']!r}")

    def score(self, job: Job) -> torch.Tensor:
        """Scores shaped like the NeuronMCT ones, drawn on the CPU (the same for a seed on
        every device) and moved to the scores' device."""
        contrib = job.first.contrib
        g = torch.Generator(device="cpu").manual_seed(int(job.opts["seed"]))
        return torch.rand(contrib.shape, generator=g).to(contrib.device)
