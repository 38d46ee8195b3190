"""The pure-PyTorch engine: sites and hooks, scores, selection, pathway gradient.

Nothing here imports a widget library, so scripts can use it on their own.
"""

from .explainer import PathwayExplainer
from .explanation import REDUCTIONS, Explanation, Pathway, reduce_channels
from .interventions import NETWORKS, Interventions, Override
from .pathway import GRANULARITIES, SCOPES, topk_mask
from .scorers import METHODS
from .site_spec import DEFAULT_SITE_FUNCTIONS, DEFAULT_SITE_TYPES
from .summary import LayerSummary, SiteSummary

__all__ = [
    "PathwayExplainer",
    "Interventions",
    "Override",
    "NETWORKS",
    "Explanation",
    "Pathway",
    "SiteSummary",
    "LayerSummary",
    "METHODS",
    "SCOPES",
    "GRANULARITIES",
    "REDUCTIONS",
    "DEFAULT_SITE_TYPES",
    "DEFAULT_SITE_FUNCTIONS",
    "topk_mask",
    "reduce_channels",
]
