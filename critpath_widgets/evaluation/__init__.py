"""Evaluation of saliency maps and pathways, as the paper does it: pathway analysis
(dead share, Jaccard overlap, output retained), the cascading-randomisation sanity
check, and deletion / insertion curves. Pure PyTorch, numpy, scipy and scikit-image
(matplotlib on ``.plot``); no widget import. Every function leaves the model as it was.
"""

from __future__ import annotations

from .deletion import BASELINES, CurveResult, deletion, insertion, random_baseline
from .pathway import DeadShare, Jaccard, Retained, dead_share, jaccard, retained
from .sanity import SanityResult, parameter_groups, sanity_check
from .similarity import METRICS, similarity

__all__ = [
    "BASELINES",
    "METRICS",
    "CurveResult",
    "DeadShare",
    "Jaccard",
    "Retained",
    "SanityResult",
    "dead_share",
    "deletion",
    "insertion",
    "jaccard",
    "parameter_groups",
    "random_baseline",
    "retained",
    "sanity_check",
    "similarity",
]
