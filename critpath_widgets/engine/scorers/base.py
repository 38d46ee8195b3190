"""What a scoring method is: a :class:`Scorer`, handed one :class:`Job` per explanation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..passes import PassState, ScorePass
from ..pathway import Selection
from ..validate import ProgressFn


@dataclass(eq=False)
class Job:
    """One explanation's request to a scorer: the passes' state, the input, the score
    pass already run on it (NeuronMCT scores, targets, layout; site outputs and
    gradients when the scorer :attr:`~Scorer.keeps_grads`), the selection asked for,
    the method's options, and the progress callback."""

    st: PassState
    x: torch.Tensor
    first: ScorePass
    selection: Selection
    opts: dict[str, Any]
    progress: ProgressFn | None


class Scorer:
    """One method of scoring every neuron (higher scores are kept first).

    A subclass sets :attr:`description` and :attr:`options` (its own options with their
    defaults), checks their values in :meth:`check_options` and scores in :meth:`score`.
    One instance per explainer: what it verifies on the model it keeps until the net
    that runs changes (:meth:`reset`).
    """

    #: one line: what the method scores
    description: ClassVar[str] = ""
    #: the method's own options and their defaults (besides granularity and progress)
    options: ClassVar[dict[str, Any]] = {}
    #: the score pass must keep site outputs and their gradients for :meth:`score`
    keeps_grads: ClassVar[bool] = False
    #: the scores depend on the sparsity asked for (the order of removal is found step by
    #: step up to it), so another sparsity needs a new scoring, not a new threshold
    path_dependent: ClassVar[bool] = False

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """Raise an InputError for an option value this method cannot use."""

    def reset(self) -> None:
        """Forget what was verified on the net that ran so far: another one runs now."""

    def score(self, job: Job) -> torch.Tensor:
        """The scores, flat (N, total neurons) in the score pass's layout."""
        raise NotImplementedError
