"""PathwayExplainer: neuron contributions, critical pathways and the pathway gradient.

Implements Khakzar et al., "Neural Response Interpretation through the Lens of Critical
Pathways" (CVPR 2021) with hooks on the user's activation modules. An explanation is
validate (:mod:`.validate`), score (the score pass of :mod:`.passes`, then the method's
scorer from :mod:`.scorers`), select (:mod:`.pathway`) and one masked pass
(:mod:`.passes`, :mod:`.masking`). What runs is the model itself or, by default, a twin
that shares all its modules but has eval-mode BatchNorms folded into the convolutions
before them (:mod:`.fold`; the same function, one memory pass fewer per BatchNorm each
way); with ``dtype=torch.float64``, the model on float64 copies of its tensors
(:mod:`.precision`). Every public call leaves the model exactly as it found it: hooks
removed, train/eval flags restored, parameters and buffers untouched (gradients are
taken with ``torch.autograd.grad``, which never writes ``.grad``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import OptionError, SiteWarning
from . import passes
from .axes import feature_axis_last
from .explanation import Explanation, Pathway, blank_map_notices
from .fold import BatchNormFolding
from .interventions import Interventions, apply_interventions
from .layout import SiteLayout
from .passes import PassState
from .pathway import Ranking, Selection, check_finite_scores, check_scope, check_sparsity
from .pathway.policy import pass_weights
from .precision import Float64Net, check_dtype
from .scorers import METHOD_OPTIONS, METHODS, SCORERS, Job, Scorer
from .site_spec import SiteSpec, resolve_sites
from .sites import eval_mode, first_in_channels, unwrap_model
from .validate import (
    ProgressFn,
    caller_level,
    check_input,
    check_options,
    progress_fn,
    resolve_target,
)


class Scoring(NamedTuple):
    """One scoring: shared by an explanation and all it derives by ``at_sparsity``."""

    method: str
    inputs: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    names: list[str]
    #: per site: what it is (module type or "F.kind") and whether it is piecewise linear
    kinds: list[tuple[str, bool]]
    layout: SiteLayout
    #: NeuronMCT scores, flat (N, total neurons)
    contrib: torch.Tensor
    #: the method's scores, sorted on demand
    ranking: Ranking
    #: the method's options (granularity included, progress not): what a path-dependent
    #: method runs again with at another sparsity
    options: dict[str, Any]


class SiteActivations(NamedTuple):
    """Every site's output for one input batch (:meth:`PathwayExplainer.activations`)."""

    logits: torch.Tensor
    names: list[str]
    layout: SiteLayout
    #: per site, (N, *shape), in call order
    outputs: list[torch.Tensor]
    #: (H, W) of image inputs (N, C, H, W), else None
    input_size: tuple[int, int] | None = None


class PathwayExplainer:
    """Explains a classifier's answer by its critical pathway and pathway gradient.

    ``sites`` chooses the recorded calls: None (the activation modules of
    :data:`~.site_spec.DEFAULT_SITE_TYPES`, ReLU family, GELU, SiLU, Hardswish, Mish,
    ELU family, and the same activations called as functions in ``forward``), module
    types, module names, activation functions (``F.relu``), or a predicate
    ``f(name, module)``. Sites that are not piecewise linear are flagged
    (:attr:`Explanation.piecewise_linear`) with a one-time :class:`SiteWarning`.
    ``fold_batchnorm`` runs a twin with each eval-mode BatchNorm folded into the
    convolution that feeds it (faster, equal up to float rounding, compared with the
    model's live tensors on every call and refolded where they changed; a fallback to the
    model itself warns once and shows in :attr:`folding_off_reason`): pass False to run
    the model itself. ``dtype=torch.float64`` computes everything in float64 (inputs
    converted, results float64) through float64 copies of the model's parameters and
    buffers made on every call (:mod:`.precision`; the model itself is not converted,
    folding is off): a float32 ReLU gate within rounding of 0 can otherwise flip and
    move the map.
    """

    #: the selection methods :meth:`explain` accepts ("neuron_mct", "neuron_intgrad", ...)
    methods: tuple[str, ...] = METHODS

    def __init__(
        self,
        model: nn.Module,
        sites: SiteSpec = None,
        fold_batchnorm: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        # a torch.compile or (Distributed)DataParallel wrapper is explained through the
        # module it wraps (same function; the wrapper is never touched)
        model = unwrap_model(model)
        self.model = model
        choice = resolve_sites(model, sites)
        modules = choice.modules
        # eval-mode BatchNorms folded into the convolutions before them, in a twin that
        # shares every other module with the model (see .fold); _running chooses the net
        self._folding = BatchNormFolding(model, [m for _, m in modules]) if fold_batchnorm else None
        self._state = PassState(modules, model, choice=choice)
        self._noticed: set[str] = set()  # notices already warned about
        self._in_channels = first_in_channels(model)
        self._scorers: dict[str, Scorer] = {name: cls() for name, cls in SCORERS.items()}
        # float64 on request: the model on float64 copies of its tensors, never folded
        self._dtype = check_dtype(dtype)
        self._float64 = Float64Net(model) if self._dtype is not None else None
        if self._float64 is not None:
            self._folding = None

    @property
    def network(self) -> nn.Module:
        """The module that ran in the last call: the BatchNorm-folded twin, the model,
        or with ``dtype=torch.float64`` the wrapper that runs it in float64."""
        return self._state.net

    @property
    def folded_pairs(self) -> int:
        """BatchNorms folded into the network that ran last (0: the model itself ran)."""
        return (
            self._folding.pairs
            if self._folding is not None and self._state.net is not self.model
            else 0
        )

    @property
    def folding_off_reason(self) -> str | None:
        """Why the model itself runs although ``fold_batchnorm`` is on (a hook on a module
        that folding replaces, a global hook, a model that keeps changing), else None."""
        return self._folding.off_reason if self._folding is not None else None

    # ------------------------------------------------------------------ public API
    def explain(
        self,
        x: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        method: str = "neuron_mct",
        sparsity: float = 0.7,
        scope: str = "global",
        **options: Any,
    ) -> Explanation:
        """Score neurons, keep the critical pathway, and backpropagate through it only.

        ``x`` is a (N, C, H, W) batch; ``target`` None explains each sample's predicted
        class. Options: ``granularity`` ("neuron"/"channel"), ``progress`` (True for a
        tqdm bar, or ``f(done, total)``; raising :class:`Cancelled` in it aborts),
        ``steps`` and ``batch_size`` (neuron_intgrad), ``step_fraction`` (greedy),
        ``seed`` (random).
        """
        scorer = self.scorer(method)
        opts = check_options(method, options, METHOD_OPTIONS)
        scorer.check_options(opts)
        s = check_sparsity(sparsity)
        scope, granularity = check_scope(scope, opts["granularity"])
        selection = Selection(s, scope, granularity)
        x = check_input(x, self.model, self._in_channels, self._dtype)
        progress = progress_fn(opts["progress"], method)
        try:
            with self._session(x) as st:
                scoring = self._score(st, x, target, method, selection, opts, progress)
                return self._pathway_pass(st, scoring, selection)
        finally:
            if hasattr(progress, "close"):
                progress.close()

    def gradient(
        self, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The plain gradient of the target logit with respect to the input (N, C, H, W)."""
        x = check_input(x, self.model, self._in_channels, self._dtype)
        with passes.grad_enabled(), self._running(x):
            xg = x.detach().requires_grad_(True)
            logits = passes.forward(self._state, xg)
            tgt = resolve_target(target, logits)
            (g,) = passes.grad(logits.gather(1, tgt[:, None]).sum(), xg)
        return g

    def activations(self, x: torch.Tensor) -> SiteActivations:
        """Every site's output for ``x`` (detached), with the site names and layout:
        what a unit responds to, as opposed to what it contributes."""
        x = check_input(x, self.model, self._in_channels, self._dtype)
        with self._session(x) as st:
            logits, acts = passes.recorded_forward(st, x)
            layout = SiteLayout.from_tensors(acts, [feature_axis_last(a) for a in acts])
            # recorded_forward's outputs are unwritten after the pass (it checks their
            # versions, or records copies): detaching is enough
            outs = [a.detach() for a in acts]
            names = list(st.hooks.names)
        size = (int(x.shape[-2]), int(x.shape[-1])) if x.dim() == 4 else None
        return SiteActivations(logits.detach(), names, layout, outs, size)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model in eval mode, without gradients (model left as it was)."""
        x = check_input(x, self.model, self._in_channels, self._dtype)
        with self._running(x), torch.no_grad():
            return passes.forward(self._state, x)

    def scorer(self, method: str) -> Scorer:
        """This explainer's scorer of ``method`` (it keeps what it verified on the model)."""
        if method not in self._scorers:
            raise OptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        return self._scorers[method]

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _session(self, x: torch.Tensor) -> Iterator[PassState]:
        """Gradients on, the net chosen for ``x``, and the site hooks of one call."""
        with passes.grad_enabled(), self._running(x), self._state.site_hooks() as hooks:
            with self._state.using(hooks) as st:
                yield st

    @contextlib.contextmanager
    def _running(self, x: torch.Tensor) -> Iterator[None]:
        """Eval mode, and the net that runs for ``x``: the folded twin when valid, else
        the model. What was verified on one of them is verified again on a change."""
        with eval_mode(self.model), contextlib.ExitStack() as stack:
            if self._float64 is not None:  # copies of the live tensors, for this call only
                net = stack.enter_context(self._float64.copies())
            else:
                net = self._folding.net(x) if self._folding is not None else self.model
            if net is not self._state.net:
                self._state.net = net
                self._state.premask = None
                for scorer in self._scorers.values():
                    scorer.reset()
            yield

    def _score(
        self,
        st: PassState,
        x: torch.Tensor,
        target: Any,
        method: str,
        selection: Selection,
        opts: dict[str, Any],
        progress: ProgressFn | None,
    ) -> Scoring:
        """The score pass, then the method's scores (site outputs and gradients that a
        scorer kept are dropped on return)."""
        scorer = self._scorers[method]
        first = passes.score_pass(st, x, target, keep_grads=scorer.keeps_grads)
        names, kinds = list(st.hooks.names), list(st.hooks.kinds)
        self._notice_nonlinear(kinds)
        flat = scorer.score(Job(st, x, first, selection, opts, progress))
        if flat is not first.contrib:  # the score pass checks its own
            check_finite_scores(flat)
        kept_opts = {k: v for k, v in opts.items() if k != "progress"}
        return Scoring(
            method,
            x,
            first.target,
            first.logits,
            names,
            kinds,
            first.layout,
            first.contrib,
            Ranking(flat),
            kept_opts,
        )

    def _notice_nonlinear(self, kinds: list[tuple[str, bool]]) -> None:
        """Warn once per set of types when sites are not piecewise linear."""
        odd = Counter(k for k, linear in kinds if not linear)
        if not odd:
            return
        what = ", ".join(f"{k} x{n}" for k, n in sorted(odd.items()))
        if what in self._noticed:
            return
        self._noticed.add(what)
        warnings.warn(
            f"{sum(odd.values())} of the {len(kinds)} sites are not piecewise linear ({what}): "
            "there the pathway gradient is a gradient through the kept neurons, not the "
            "exact local linear model that the paper's results assume (ReLU-like "
            "activations). Explanation.piecewise_linear says so.",
            SiteWarning,
            stacklevel=caller_level(),
        )

    def _pathway_pass(
        self,
        st: PassState,
        scoring: Scoring,
        selection: Selection,
        sorted_selection: bool = False,
        interventions: Interventions | None = None,
    ) -> Explanation:
        """The pathway kept at ``selection`` (with ``interventions`` applied) and one
        masked pass through it."""
        x, layout, ranking = scoring.inputs, scoring.layout, scoring.ranking
        if interventions:
            weights = self._intervened_weights(scoring, selection, interventions)
            masks, fill = layout.views(weights), None
        else:
            weights, masks, fill = pass_weights(
                ranking, layout, selection, x.dtype, sorted_selection
            )
        p_logits, sal = passes.masked_pass(st, x, scoring.target, masks, fill)
        notices = blank_map_notices(sal, scoring.contrib)
        return Explanation(
            saliency=sal,
            scores=layout.views(ranking.scores),
            pathway=Pathway(weights, scoring.names, *selection, layout),
            target=scoring.target,
            logits=scoring.logits,
            pathway_logits=p_logits,
            method=scoring.method,
            inputs=x,
            contributions=layout.views(scoring.contrib),
            explainer=self,
            _flat_contrib=scoring.contrib,
            _layout=layout,
            _ranking=ranking,
            _kinds=scoring.kinds,
            notices=notices,
            _options=scoring.options,
            interventions=interventions or None,
        )

    @staticmethod
    def _intervened_weights(
        scoring: Scoring, selection: Selection, interventions: Interventions
    ) -> torch.Tensor:
        """The 0/1 weights of the intervened network: the pathway's selection (or every
        unit, for the full network) with the overrides applied."""
        x, layout, ranking = scoring.inputs, scoring.layout, scoring.ranking
        if interventions.network == "full":
            base = torch.ones(x.shape[0], layout.total, dtype=x.dtype, device=x.device)
        else:
            base, _, fill = pass_weights(ranking, layout, selection, x.dtype, True)
            if fill is not None:  # a deferred selection: make every site's weights now
                for i in range(len(layout)):
                    fill(i)
        return apply_interventions(base, layout, interventions)

    def _at_sparsity(self, e: Explanation, sparsity: float, progress: Any = None) -> Explanation:
        """A new selection from ``e``'s cached scores and one masked pass (``e``'s
        interventions applied again); for a path-dependent method at another sparsity,
        the method run again instead."""
        if sparsity != e.sparsity and self.scorer(e.method).path_dependent:
            # its scores hold only the removal order up to e.sparsity: run it again on the
            # same inputs, targets and options, which is what explain gives at sparsity
            opts = {**e._options, "progress": progress}
            out = self.explain(e.inputs, e.target, e.method, sparsity, e.scope, **opts)
            return self._intervene(out, e.interventions) if e.interventions else out
        return self._repass(e, Selection(sparsity, e.scope, e.granularity), e.interventions)

    def _intervene(self, e: Explanation, interventions: Interventions) -> Explanation:
        """``e``'s pathway (or the full network) with ``interventions``: one masked pass."""
        sparsity = 0.0 if interventions.network == "full" else e.sparsity
        return self._repass(e, Selection(sparsity, e.scope, e.granularity), interventions)

    def _repass(
        self, e: Explanation, selection: Selection, interventions: Interventions | None
    ) -> Explanation:
        """One masked pass from ``e``'s cached scoring at ``selection``."""
        with self._session(e.inputs) as st:
            st.hooks.names.extend(e.site_names)
            scoring = Scoring(
                e.method,
                e.inputs,
                e.target,
                e.logits,
                e.site_names,
                e._kinds,
                e._layout,
                e._flat_contrib,
                e._ranking,
                e._options,
            )
            return self._pathway_pass(
                st, scoring, selection, sorted_selection=True, interventions=interventions
            )
