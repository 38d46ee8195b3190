"""NeuronMCT: a neuron's contribution |a * dy/da|, from the score pass itself."""

from __future__ import annotations

import torch

from .base import Job, Scorer


class NeuronMCT(Scorer):
    """The score pass's own scores: no further pass."""

    description = "|a * dy/da| of every neuron: one forward and one backward pass"

    def score(self, job: Job) -> torch.Tensor:
        """The score pass's NeuronMCT scores, as they are."""
        return job.first.contrib
