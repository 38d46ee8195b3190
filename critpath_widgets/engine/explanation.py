"""What an explanation returns: the pathway, the scores, the pathway gradient.

:class:`Explanation` keeps the scoring it came from (scores, contributions, their sorted
:class:`~.pathway.Ranking`), so that :meth:`Explanation.at_sparsity` costs one masked
pass and no new scoring (a path-dependent method, greedy, runs again instead);
:class:`Pathway` is the kept selection, and
:class:`~.summary.LayerSummary` the per-site figures of the layer panel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError, OptionError
from .interventions import Interventions, OverrideSpec, check_network, parse_interventions
from .layout import SiteLayout
from .pathway import Ranking, check_sparsity, count_ones
from .summary import LayerSummary, SiteSummary

if TYPE_CHECKING:
    from .explainer import PathwayExplainer

REDUCTIONS = ("max_abs", "abs_sum", "x_input")


def reduce_channels(
    g: torch.Tensor, reduce: str = "max_abs", inputs: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C, H, W) gradient -> (N, H, W) map: "max_abs" (per pixel the channel value of
    largest magnitude, sign kept, as in the paper), "abs_sum" or "x_input"."""
    if reduce == "max_abs":
        idx = g.abs().max(dim=1, keepdim=True).indices  # max over dim 1 is cheaper than argmax
        return g.gather(1, idx).squeeze(1)
    if reduce == "abs_sum":
        return g.abs().sum(dim=1)
    if reduce == "x_input":
        if inputs is None:
            raise InputError("reduce='x_input' needs the inputs")
        return (g * inputs).sum(dim=1)
    raise OptionError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")


def blank_map_notices(saliency: torch.Tensor, contrib: torch.Tensor) -> tuple[str, ...]:
    """Why a sample's pathway gradient is zero everywhere, when it is (a blank map must
    not look like an answer)."""
    notices = []
    blank = ~saliency.flatten(1).any(dim=1)
    for i in blank.nonzero().flatten().tolist():
        if not contrib[i].any():
            notices.append(
                f"sample {i}: the map is blank because the target logit does not depend on "
                "the input at all (every neuron's gradient is zero); a classifier head "
                "initialised to zero, as in torchvision's ViT without pretrained weights, "
                "does this"
            )
        else:
            notices.append(
                f"sample {i}: the map is blank because no gradient flows through the kept "
                "pathway at this sparsity; lower the sparsity or use scope='layer'"
            )
    return tuple(notices)


@dataclass
class Pathway:
    """The critical pathway: which neurons of every site are kept."""

    #: the selection as 0/1 values of the activations' dtype, (N, total neurons) in the
    #: flat site layout (what the masked pass multiplies by)
    weights: torch.Tensor = field(repr=False)
    #: the recorded sites' names, in call order (a site's index is its position here)
    site_names: list[str]
    #: the share of units removed that was asked for: of neurons with granularity
    #: "neuron", of channels with "channel" (:attr:`neuron_sparsity` then differs)
    sparsity: float
    #: "global" (one threshold over all sites) or "layer" (the same share per site)
    scope: str
    #: "neuron" (units are single neurons) or "channel" (whole channels kept or removed)
    granularity: str
    #: where each site's neurons lie in the flat (N, total neurons) layout
    layout: SiteLayout = field(repr=False)
    _flat: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def flat(self) -> torch.Tensor:
        """The selection as one bool (N, total neurons) tensor (True = kept); made from the
        weights on first use, since the pass itself needs only the weights."""
        if self._flat is None:
            self._flat = self.weights.bool()
        return self._flat

    @property
    def masks(self) -> list[torch.Tensor]:
        """One bool mask per site, shaped like the site's output (views into :attr:`flat`)."""
        return self.layout.views(self.flat)

    @property
    def kept(self) -> torch.Tensor:
        """Number of neurons kept per sample, LongTensor (N,)."""
        return self.flat.sum(dim=1)

    @property
    def neurons(self) -> int:
        """Number of neurons per sample over all sites."""
        return int(self.flat.shape[1])

    @property
    def neuron_sparsity(self) -> torch.Tensor:
        """Share of neurons removed per sample, float64 (N,). Equal to :attr:`sparsity` up
        to rounding for granularity "neuron"; for "channel" channels of different sizes
        are removed, so the share of neurons differs."""
        return 1.0 - self.kept.double() / max(self.neurons, 1)

    def kept_channels(self, index: int, sample: int = 0) -> torch.Tensor:
        """Bool (C,): which channels (features, for token and channels-last sites) of
        site ``index`` hold at least one kept neuron in ``sample``."""
        row = self.layout.slice(self.flat, index)[sample]
        return self.layout.by_channel(row, index).any(dim=-1)


@dataclass
class Explanation:
    """Result of :meth:`PathwayExplainer.explain`: pathway, scores and pathway gradient."""

    #: the pathway gradient: the target logit's gradient through the kept neurons only,
    #: with respect to the input, shaped like :attr:`inputs` (N, C, H, W)
    saliency: torch.Tensor
    #: the selection method's neuron scores, one tensor per site shaped like its output
    scores: list[torch.Tensor]
    #: the critical pathway kept at :attr:`sparsity`
    pathway: Pathway
    #: the explained class per sample, LongTensor (N,)
    target: torch.Tensor
    #: the full network's logits (N, classes)
    logits: torch.Tensor
    #: the logits of the network restricted to the pathway (N, classes)
    pathway_logits: torch.Tensor
    #: the selection method's name ("neuron_mct", "neuron_intgrad", ...)
    method: str
    #: the explained input batch, as the model saw it (N, C, H, W)
    inputs: torch.Tensor = field(repr=False)
    #: NeuronMCT contributions ``|a * dy/da|`` of every neuron, one tensor per site
    #: shaped like its output (what the layer summary and site maps add up)
    contributions: list[torch.Tensor] = field(repr=False)
    #: the explainer that made this explanation (``at_sparsity`` and reruns go through it)
    explainer: PathwayExplainer = field(repr=False)
    _flat_contrib: torch.Tensor = field(repr=False)
    _layout: SiteLayout = field(repr=False)
    _ranking: Ranking = field(repr=False)
    #: per site: what it is (module type or "F.kind") and whether it is piecewise linear
    _kinds: list[tuple[str, bool]] = field(default_factory=list, repr=False)
    #: what a reader of the map must know (a blank map and why), in sentences
    notices: tuple[str, ...] = ()
    #: the method's options (granularity included, progress not), for a rerun
    _options: dict[str, Any] = field(default_factory=dict, repr=False)
    #: units forced out of / into the network (:meth:`with_overrides`); None: the plain
    #: pathway selected by the scores
    interventions: Interventions | None = None

    def __repr__(self) -> str:
        """What was explained and how, in one line (no tensor dumps)."""

        def short(values: list) -> str:  # at most 4 of the batch's values, then how many
            more = f", ... ({len(values)} in all)" if len(values) > 4 else ""
            return "[" + ", ".join(str(v) for v in values[:4]) + more + "]"

        n = self.saliency.shape[0]
        rows = range(min(n, 4))
        t = self.target.tolist()
        logit = [f"{float(self.logits[i, t[i]]):.2f}" for i in rows] + [""] * (n - len(rows))
        path = [f"{float(self.pathway_logits[i, t[i]]):.2f}" for i in rows] + [""] * (n - len(rows))
        share = ""
        if self.granularity == "channel":  # the sparsity counts channels: say the neurons too
            share = [f"{v:.3f}" for v in self.pathway.neuron_sparsity.tolist()]
            share = f" (neurons removed: {short(share)})"
        return (
            f"Explanation(method={self.method!r}, input={tuple(self.inputs.shape)}, "
            f"target={short(t)}, sparsity={self.sparsity:g}, scope={self.scope!r}, "
            f"granularity={self.granularity!r}{share}, sites={len(self.site_names)}, "
            f"kept={short(self.pathway.kept.tolist())} of {self.pathway.neurons} neurons, "
            f"target logit {short(logit)} -> {short(path)} through the "
            f"{self._network_words()}{self._intervention_words()})"
        )

    def _network_words(self) -> str:
        full = self.interventions is not None and self.interventions.network == "full"
        return "full network" if full else "pathway"

    def _intervention_words(self) -> str:
        if not self.interventions:
            return ""
        return "; " + "; ".join(o.describe() for o in self.interventions.items)

    @property
    def sparsity(self) -> float:
        """Share of units removed from the network: neurons, or channels with granularity
        "channel" (``pathway.neuron_sparsity`` gives the share of neurons then)."""
        return self.pathway.sparsity

    @property
    def scope(self) -> str:
        """ "global" (one threshold over all sites) or "layer" (same share per site)."""
        return self.pathway.scope

    @property
    def granularity(self) -> str:
        """ "neuron" or "channel"."""
        return self.pathway.granularity

    @property
    def scoring(self) -> object:
        """An opaque token of the scoring: the same object for every explanation derived
        from one :meth:`PathwayExplainer.explain` call through :meth:`at_sparsity`
        (whose scores and contributions are therefore identical)."""
        return self._ranking

    @property
    def site_kinds(self) -> list[str]:
        """What each site is, in call order: a module type ("ReLU") or an activation
        function called in ``forward`` ("F.relu")."""
        return [k for k, _ in self._kinds]

    @property
    def nonlinear_kinds(self) -> list[str]:
        """The kinds of sites that are not piecewise linear (empty when all are)."""
        return sorted({k for k, linear in self._kinds if not linear})

    @property
    def piecewise_linear(self) -> bool:
        """Whether every site is piecewise linear: then the pathway gradient is the exact
        gradient of the local linear model the paper describes; else (GELU, SiLU, ...) it
        is the gradient through the kept neurons."""
        return all(linear for _, linear in self._kinds)

    @property
    def site_names(self) -> list[str]:
        """Names of the sites, in call order."""
        return self.pathway.site_names

    def saliency_map(self, reduce: str = "max_abs") -> torch.Tensor:
        """(N, H, W) map: per pixel the channel value of largest magnitude (sign kept),
        the sum of magnitudes, or gradient x input summed over channels."""
        return reduce_channels(self.saliency, reduce, self.inputs)

    @property
    def path_dependent(self) -> bool:
        """Whether the method's scores depend on the sparsity asked for (greedy removes
        neurons step by step up to it): :meth:`at_sparsity` then runs the method again."""
        return self.explainer.scorer(self.method).path_dependent

    def at_sparsity(self, sparsity: float, progress: Any = None) -> Explanation:
        """The explanation at another sparsity, equal to ``explain(..., sparsity=sparsity)``
        with this one's inputs, targets, method, scope and options.

        For most methods that is a new selection from the cached scores and one masked
        pass (the result shares :attr:`scoring`). A path-dependent method
        (:attr:`path_dependent`: greedy) found its removal order only up to this
        sparsity, so at another one it is run again in full (``progress`` as in
        ``explain``; ignored otherwise).
        """
        if self.interventions is not None and self.interventions.network == "full":
            raise InputError(
                "this is an ablation of the full network, which has no sparsity: call "
                "at_sparsity on the pathway's explanation, then with_overrides"
            )
        return self.explainer._at_sparsity(self, check_sparsity(sparsity), progress)

    def with_overrides(
        self,
        drop: OverrideSpec | None = None,
        keep: OverrideSpec | None = None,
        network: str = "pathway",
    ) -> Explanation:
        """This explanation with units forced out of (``drop``) or into (``keep``) the
        network: one masked pass from the cached scores, as :meth:`at_sparsity`.

        ``drop`` / ``keep`` map a site (name or index) to ``"all"``, a list of channels
        (its feature axis) or a list of neuron index tuples (batch dimension left out),
        e.g. ``drop={"features.3": [5, 17]}``. ``network="pathway"`` changes the
        critical pathway at this sparsity; ``network="full"`` removes the dropped units
        from the whole network (an ablation: ``keep`` is refused there). The result's
        :attr:`pathway_logits` are the intervened network's logits, its saliency that
        network's input gradient, and :attr:`interventions` says what was overridden.
        Overrides replace this explanation's own (start from the plain pathway).
        """
        iv = parse_interventions(drop, keep, network, self.site_names, self._layout)
        return self.explainer._intervene(self, iv)

    def probabilities(self, network: str = "pathway") -> torch.Tensor:
        """Softmax over the classes (N, classes) of the network explained here
        (``"pathway"``: the pathway, intervened or not) or of the unchanged model
        (``"full"``)."""
        logits = self.pathway_logits if check_network(network) == "pathway" else self.logits
        return torch.softmax(logits.double(), dim=1)

    def top_classes(
        self, k: int = 5, sample: int = 0, network: str = "pathway"
    ) -> list[tuple[int, float]]:
        """The ``k`` most probable classes as (index, probability) of ``sample``, for the
        pathway network (intervened or not) or the unchanged model (``"full"``)."""
        p = self.probabilities(network)[sample]
        values, idx = p.topk(min(int(k), p.numel()))
        return list(zip(idx.tolist(), values.tolist(), strict=True))

    def prepare_sparsity_changes(self) -> None:
        """Sort the cached scores now (once per explanation), so that every later
        :meth:`at_sparsity` selects with a single comparison pass. ``at_sparsity`` does
        this itself on first use; interactive front ends call it while idle."""
        if self.granularity != "neuron" or not self._ranking.usable or self.path_dependent:
            return  # (a path-dependent method runs again at another sparsity)
        if self.scope == "global":
            self._ranking.keys()
        else:
            for o, size in zip(self._layout.offsets, self._layout.sizes, strict=True):
                self._ranking.keys(o, o + size)

    def layer_summary(self, sample: int = 0) -> LayerSummary:
        """Per site: neurons, kept neurons, total and kept contribution, per-channel sums
        (channels being the feature axis: dim 1, or the last dim of token and
        channels-last sites), its spatial grid and its class token's contribution: a list,
        shown as a table in a notebook (``.to_frame()`` gives a DataFrame).

        The per-channel totals do not depend on the sparsity and are computed once per
        scoring (shared with :meth:`at_sparsity` results); only the kept part is new.
        """
        n = self.saliency.shape[0]
        if not -n <= sample < n:
            raise InputError(f"sample {sample} out of range for a batch of {n}")
        sample %= n
        layout = self._layout
        row = self._flat_contrib[sample]
        spans = [row[o : o + size] for o, size in zip(layout.offsets, layout.sizes, strict=True)]
        totals = self._ranking.cache.get(("channel_total", sample))
        if totals is None:
            totals = [layout.by_channel(r, i).sum(dim=-1).cpu() for i, r in enumerate(spans)]
            self._ranking.cache[("channel_total", sample)] = totals
        wrow = self.pathway.weights[sample].to(row.dtype)
        wspans = [wrow[o : o + size] for o, size in zip(layout.offsets, layout.sizes, strict=True)]
        # kept contribution of a site: one dot product (no product buffer); the
        # per-channel split only for the sites whose channels are looked at
        dots = [torch.dot(r, w) for r, w in zip(spans, wspans, strict=True)]
        kept_totals = torch.stack(dots).tolist()
        counts = [int(count_ones(w[None])) for w in wspans]
        site_totals = torch.stack([t.sum() for t in totals]).tolist()
        image = self._image_size()
        grids = [layout.grid(i, image) for i in range(len(layout))]
        # a class token is the first D values of its site's (T, D) row
        tokens = [i for i, g in enumerate(grids) if g.class_token]
        sums = [spans[i][: layout.shapes[i][-1]].sum() for i in tokens]
        cls = dict(zip(tokens, torch.stack(sums).tolist() if sums else [], strict=True))

        def channel_kept(i: int) -> Callable[[], torch.Tensor]:
            return lambda: layout.by_channel(spans[i] * wspans[i], i).sum(dim=-1).cpu()

        kinds = self.site_kinds
        summaries = (
            SiteSummary(
                index=i,
                name=self.site_names[i],
                shape=layout.shapes[i],
                neurons=layout.sizes[i],
                kept=counts[i],
                total=float(site_totals[i]),
                kept_total=float(kept_totals[i]),
                channel_total=totals[i],
                _channel_kept=channel_kept(i),
                grid=grids[i],
                class_token_total=cls.get(i),
                kind=kinds[i] if i < len(kinds) else "",
            )
            for i in range(len(layout))
        )
        return LayerSummary(summaries, sample)

    def _image_size(self) -> tuple[int, int] | None:
        """(H, W) of the inputs when they are images (N, C, H, W), else None."""
        return tuple(self.inputs.shape[-2:]) if self.inputs.dim() == 4 else None

    def site_map(self, index: int, sample: int = 0) -> torch.Tensor:
        """(H, W) spatial contribution map of one site: its contributions summed over the
        features at each position (:meth:`.SiteLayout.grid`: conv (C, H, W) and channels-
        last (H, W, C) sites, and token sites on a square patch grid, whose class token
        is left out). Other sites raise an InputError that says why they have none."""
        if not 0 <= index < len(self.contributions):
            raise InputError(f"site index {index} out of range (0..{len(self.contributions) - 1})")
        c = self.contributions[index][sample].detach()
        grid = self._layout.grid(index, self._image_size())
        if grid.hw is None:
            raise InputError(
                f"site {self.site_names[index]!r} has output shape {tuple(c.shape)}: "
                f"no spatial map ({grid.reason})"
            )
        return grid.spatial_map(c)
