"""The scoring methods, by name: what ``PathwayExplainer.explain(method=...)`` accepts.

Adding a method is one module with a :class:`~.base.Scorer` subclass and one line in
:data:`SCORERS`; its options, their defaults and its description come from the class.
"""

from __future__ import annotations

from typing import Any

from .base import Job, Scorer
from .dgr import DGR
from .greedy import Greedy
from .intgrad import NeuronIntGrad
from .mct import NeuronMCT
from .random import RandomScores

#: method name -> scorer class, in the order front ends list them
SCORERS: dict[str, type[Scorer]] = {
    "neuron_mct": NeuronMCT,
    "neuron_intgrad": NeuronIntGrad,
    "greedy": Greedy,
    "dgr": DGR,
    "random": RandomScores,
}

METHODS: tuple[str, ...] = tuple(SCORERS)
#: method name -> its own options and their defaults
METHOD_OPTIONS: dict[str, dict[str, Any]] = {m: dict(s.options) for m, s in SCORERS.items()}

__all__ = ["METHODS", "METHOD_OPTIONS", "SCORERS", "Job", "Scorer"]
