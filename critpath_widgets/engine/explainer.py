"""PathwayExplainer: neuron contributions, critical pathways and the pathway gradient.

Implements Khakzar et al., "Neural Response Interpretation through the Lens of Critical
Pathways" (CVPR 2021) with hooks on the user's activation modules. What runs is the
model itself or, by default, a twin that shares all its modules but has eval-mode
BatchNorms folded into the convolutions before them (:mod:`.fold`; the same function,
one memory pass fewer per BatchNorm each way). Every public call leaves the model
exactly as it found it: hooks removed, train/eval flags restored, parameters and
buffers untouched (gradients are taken with ``torch.autograd.grad``, which never
writes ``.grad``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import Cancelled, InputError, InputTypeError, ModelError, OptionError
from . import memory
from .affine import AffineShortcut, alpha_batch, sum_rows
from .fold import BatchNormFolding, global_hooks
from .graph import edge_counts
from .layout import SiteLayout
from .pathway.kernels import Ranking, count_ones, topk_mask
from .pathway.policy import (
    GRANULARITIES,
    SCOPES,
    check_finite_scores,
    check_scope,
    check_sparsity,
    keep_count,
    select,
)
from .replay import PrefixReplay
from .sites import (
    SiteHooks,
    SiteSpec,
    eval_mode,
    first_in_channels,
    model_device,
    model_dtype,
    resolve_site_modules,
)

METHODS = ("neuron_mct", "neuron_intgrad", "greedy", "random")
REDUCTIONS = ("max_abs", "abs_sum", "x_input")

# Options each method accepts besides the common ones (granularity, progress).
_METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "neuron_mct": {},
    "neuron_intgrad": {"steps": 10, "batch_size": 32},
    "greedy": {"step_fraction": 0.01},
    "random": {"seed": 0},
}
_COMMON_OPTIONS = {"granularity": "neuron", "progress": None}

ProgressFn = Callable[[int, int], None]


def reduce_channels(
    g: torch.Tensor, reduce: str = "max_abs", inputs: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C, H, W) gradient -> (N, H, W) map: "max_abs" (per pixel the channel value of
    largest magnitude, sign kept, as in the paper), "abs_sum" or "x_input"."""
    if reduce == "max_abs":
        idx = g.abs().max(dim=1, keepdim=True).indices  # 20x faster than argmax over dim 1
        return g.gather(1, idx).squeeze(1)
    if reduce == "abs_sum":
        return g.abs().sum(dim=1)
    if reduce == "x_input":
        if inputs is None:
            raise InputError("reduce='x_input' needs the inputs")
        return (g * inputs).sum(dim=1)
    raise OptionError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")


@dataclass
class Pathway:
    """The critical pathway: which neurons of every site are kept."""

    #: the selection as 0/1 values of the activations' dtype, (N, total neurons) in the
    #: flat site layout (what the masked pass multiplies by)
    weights: torch.Tensor = field(repr=False)
    site_names: list[str]
    sparsity: float
    scope: str
    granularity: str
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

    def jaccard(self, other: Pathway) -> torch.Tensor:
        """Jaccard overlap per sample with another pathway of the same model and input."""
        if self.flat.shape != other.flat.shape:
            raise InputError("pathways of different models or inputs cannot be compared")
        inter = (self.flat & other.flat).sum(dim=1).double()
        union = (self.flat | other.flat).sum(dim=1).double()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class SiteSummary:
    """Per-site figures for one sample: what the layer panel plots."""

    index: int
    name: str
    shape: tuple[int, ...]
    neurons: int
    kept: int
    total: float
    kept_total: float
    channel_total: torch.Tensor
    _channel_kept: Callable[[], torch.Tensor] | torch.Tensor = field(repr=False)

    @property
    def channel_kept(self) -> torch.Tensor:
        """Contribution kept by the pathway in each channel (computed on first use: a
        panel shows the channels of one site at a time)."""
        if callable(self._channel_kept):
            self._channel_kept = self._channel_kept()
        return self._channel_kept


@dataclass
class Explanation:
    """Result of :meth:`PathwayExplainer.explain`: pathway, scores and pathway gradient."""

    saliency: torch.Tensor
    scores: list[torch.Tensor]
    pathway: Pathway
    target: torch.Tensor
    logits: torch.Tensor
    pathway_logits: torch.Tensor
    method: str
    inputs: torch.Tensor = field(repr=False)
    contributions: list[torch.Tensor] = field(repr=False)
    explainer: PathwayExplainer = field(repr=False)
    _flat_contrib: torch.Tensor = field(repr=False)
    _layout: SiteLayout = field(repr=False)
    _ranking: Ranking = field(repr=False)

    @property
    def sparsity(self) -> float:
        """Share of neurons removed from the network."""
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
    def site_names(self) -> list[str]:
        """Names of the sites, in call order."""
        return self.pathway.site_names

    def saliency_map(self, reduce: str = "max_abs") -> torch.Tensor:
        """(N, H, W) map: per pixel the channel value of largest magnitude (sign kept),
        the sum of magnitudes, or gradient x input summed over channels."""
        return reduce_channels(self.saliency, reduce, self.inputs)

    def at_sparsity(self, sparsity: float) -> Explanation:
        """The explanation at another sparsity from the cached scores (one masked pass)."""
        return self.explainer._at_sparsity(self, check_sparsity(sparsity))

    def prepare_sparsity_changes(self) -> None:
        """Sort the cached scores now (once per explanation), so that every later
        :meth:`at_sparsity` selects with a single comparison pass. ``at_sparsity`` does
        this itself on first use; interactive front ends call it while idle."""
        if self.granularity != "neuron" or not self._ranking.usable:
            return
        if self.scope == "global":
            self._ranking.keys()
        else:
            for o, size in zip(self._layout.offsets, self._layout.sizes, strict=True):
                self._ranking.keys(o, o + size)

    def layer_summary(self, sample: int = 0) -> list[SiteSummary]:
        """Per site: neurons, kept neurons, total and kept contribution, per-channel sums.

        The per-channel totals do not depend on the sparsity and are computed once per
        scoring (shared with :meth:`at_sparsity` results); only the kept part is new.
        """
        n = self.saliency.shape[0]
        if not -n <= sample < n:
            raise InputError(f"sample {sample} out of range for a batch of {n}")
        sample %= n
        layout = self._layout
        chans = layout.channels()
        row = self._flat_contrib[sample]
        totals = self._ranking.cache.get(("channel_total", sample))
        if totals is None:
            totals = [
                row[o : o + size].view(c, -1).sum(dim=1).cpu()
                for o, size, c in zip(layout.offsets, layout.sizes, chans, strict=True)
            ]
            self._ranking.cache[("channel_total", sample)] = totals
        wrow = self.pathway.weights[sample].to(row.dtype)
        parts = [
            (row[o : o + size], wrow[o : o + size], c)
            for o, size, c in zip(layout.offsets, layout.sizes, chans, strict=True)
        ]
        # kept contribution of a site: one dot product (no product buffer); the
        # per-channel split only for the sites whose channels are looked at
        kept_totals = torch.stack([torch.dot(r, w) for r, w, _ in parts]).tolist()
        counts = [int(count_ones(w[None])) for _, w, _ in parts]
        site_totals = torch.stack([t.sum() for t in totals]).tolist()

        def channel_kept(r: torch.Tensor, w: torch.Tensor, c: int) -> Callable[[], torch.Tensor]:
            return lambda: (r * w).view(c, -1).sum(dim=1).cpu()

        return [
            SiteSummary(
                index=i,
                name=self.site_names[i],
                shape=layout.shapes[i],
                neurons=layout.sizes[i],
                kept=counts[i],
                total=float(site_totals[i]),
                kept_total=float(kept_totals[i]),
                channel_total=totals[i],
                _channel_kept=channel_kept(*parts[i]),
            )
            for i in range(len(layout))
        ]

    def site_map(self, index: int, sample: int = 0) -> torch.Tensor:
        """(H, W) spatial contribution map of one site: contributions summed over channels."""
        if not 0 <= index < len(self.contributions):
            raise InputError(f"site index {index} out of range (0..{len(self.contributions) - 1})")
        c = self.contributions[index][sample].detach()
        if c.dim() != 3:
            raise InputError(
                f"site {self.site_names[index]!r} has output shape {tuple(c.shape)}: "
                "no spatial map (only conv sites shaped (C, H, W) have one)"
            )
        return c.sum(dim=0)


class PathwayExplainer:
    """Explains a classifier's answer by its critical pathway and pathway gradient.

    ``sites`` chooses the recorded modules: None (ReLU, ReLU6, LeakyReLU, Hardtanh,
    PReLU), module types, module names, or a predicate ``f(name, module)``.
    ``fold_batchnorm`` runs a twin with each eval-mode BatchNorm folded into the
    convolution that feeds it (faster, equal up to float rounding, following changes to
    the model; edits of a few single values through ``.data`` may go unseen): pass False
    to run the model itself.
    """

    methods: tuple[str, ...] = METHODS
    scopes: tuple[str, ...] = SCOPES
    granularities: tuple[str, ...] = GRANULARITIES

    def __init__(self, model: nn.Module, sites: SiteSpec = None, fold_batchnorm: bool = True):
        self.model = model
        self._modules = resolve_site_modules(model, sites)
        # eval-mode BatchNorms folded into the convolutions before them, in a twin that
        # shares every other module with the model (see .fold); _net is what runs
        self._folding = (
            BatchNormFolding(model, [m for _, m in self._modules]) if fold_batchnorm else None
        )
        self._net: nn.Module = model
        self._module_by_name = dict(self._modules)
        self._in_channels = first_in_channels(model)
        self._protect = False  # set when a model modifies site outputs in place
        self._broadcast_ok: bool | None = None  # neuron_intgrad prefix sharing verified
        self._replay_ok: bool | None = None  # neuron_intgrad prefix replay verified
        self._broadcast_replay_ok: bool | None = None  # both at once, for one image
        # False once a score pass found a site whose gradient a backward to the first
        # site does not compute: scores are then taken from captured gradients
        self._scores_in_backward: bool | None = None
        # per site: (its module, its inplace flag) when its input may be masked in place
        # before the call (see _premask_sites), read off the first score pass's graph
        self._premask: list[tuple[nn.Module, bool] | None] | None = None

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
        if method not in METHODS:
            raise OptionError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        opts = self._check_options(method, options)
        s = check_sparsity(sparsity)
        scope, granularity = check_scope(scope, opts["granularity"])
        x = self._check_input(x)
        progress = _progress_fn(opts["progress"], method)
        try:
            with self._session(x) as hooks:
                logits, acts, grads, tgt, layout, contrib = self._score_pass(
                    hooks, x, target, keep_grads=method == "neuron_intgrad"
                )
                names = list(hooks.names)
                if method == "neuron_mct":
                    flat = contrib
                elif method == "neuron_intgrad":
                    flat = self._intgrad(hooks, x, tgt, acts, grads, layout, opts, progress)
                elif method == "random":
                    g = torch.Generator(device="cpu").manual_seed(int(opts["seed"]))
                    flat = torch.rand(contrib.shape, generator=g).to(contrib.device)
                else:
                    flat = self._greedy(
                        hooks, x, tgt, contrib, layout, s, scope, granularity, opts, progress
                    )
                del acts, grads
                if flat is not contrib:  # the score pass checks its own
                    check_finite_scores(flat)
                return self._pathway_pass(
                    hooks,
                    x,
                    tgt,
                    method,
                    Ranking(flat),
                    contrib,
                    layout,
                    names,
                    logits,
                    s,
                    scope,
                    granularity,
                )
        finally:
            if hasattr(progress, "close"):
                progress.close()

    def gradient(
        self, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The plain gradient of the target logit with respect to the input (N, C, H, W)."""
        x = self._check_input(x)
        with _grad_enabled(), self._running(x):
            xg = x.detach().requires_grad_(True)
            logits = self._forward(xg)
            tgt = self._resolve_target(target, logits)
            (g,) = _grad(logits.gather(1, tgt[:, None]).sum(), xg)
        return g

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model in eval mode, without gradients (model left as it was)."""
        x = self._check_input(x)
        with self._running(x), torch.no_grad():
            return self._forward(x)

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _session(self, x: torch.Tensor) -> Iterator[SiteHooks]:
        with _grad_enabled(), self._running(x), SiteHooks(self._modules) as hooks:
            yield hooks

    @contextlib.contextmanager
    def _running(self, x: torch.Tensor) -> Iterator[None]:
        """Eval mode, and ``_net`` set to what runs for ``x``: the folded twin when valid,
        else the model. What was verified on one of them is verified again on a change."""
        with eval_mode(self.model):
            net = self._folding.net(x) if self._folding is not None else self.model
            if net is not self._net:
                self._net = net
                self._premask = None
                self._broadcast_ok = self._replay_ok = self._broadcast_replay_ok = None
            yield

    def _forward(self, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        try:
            out = self._net(x)
        except (Cancelled, ModelError, InputError):
            raise
        except RuntimeError as e:
            raise ModelError(
                f"the model's forward pass failed on input {tuple(x.shape)}: {e}"
            ) from e
        batch = x.shape[0] if batch is None else batch
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(
                f"the model must return logits shaped (N, classes); got {shape} for a batch "
                f"of {batch}"
            )
        return out

    def _check_options(self, method: str, options: dict[str, Any]) -> dict[str, Any]:
        allowed = {**_COMMON_OPTIONS, **_METHOD_OPTIONS[method]}
        for k in options:
            if k not in allowed:
                users = [m for m, o in _METHOD_OPTIONS.items() if k in o]
                hint = f" (it belongs to {', '.join(users)})" if users else ""
                raise OptionError(
                    f"unknown option {k!r} for method {method!r}{hint}; accepted: "
                    f"{', '.join(sorted(allowed))}"
                )
        opts = {**allowed, **options}
        for k in ("steps", "batch_size"):
            if k in opts and (
                isinstance(opts[k], bool) or not isinstance(opts[k], int) or opts[k] < 1
            ):
                raise InputError(f"{k} must be a positive integer, got {opts[k]!r}")
        if "step_fraction" in opts:
            f = opts["step_fraction"]
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
                raise InputError(f"step_fraction must be in (0, 1), got {f!r}")
        if "seed" in opts and (isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int)):
            raise InputError(f"seed must be an integer, got {opts['seed']!r}")
        return opts

    def _check_input(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(
                f"x must be a torch.Tensor shaped (N, C, H, W), got {type(x).__name__}"
            )
        if x.dim() != 4:
            raise InputError(
                f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}"
                + (" (add a batch dimension: x[None])" if x.dim() == 3 else "")
            )
        if x.shape[0] == 0 or x.numel() == 0:
            raise InputError(f"x is empty: shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputTypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if self._in_channels is not None and x.shape[1] != self._in_channels:
            raise InputError(
                f"x has {x.shape[1]} channels but the model's first convolution expects "
                f"{self._in_channels}"
            )
        if not bool(torch.isfinite(x).all()):
            raise InputError("x contains NaN or infinite values")
        return x.detach().to(device=model_device(self.model), dtype=model_dtype(self.model))

    def _resolve_target(self, target: Any, logits: torch.Tensor) -> torch.Tensor:
        n, k = logits.shape
        if target is None:
            return logits.detach().argmax(dim=1)
        if isinstance(target, bool):
            raise InputTypeError("target must be an int, a sequence of ints or a LongTensor")
        if isinstance(target, int):
            t = torch.full((n,), target, dtype=torch.long)
        elif isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
                raise InputTypeError(f"target must hold integers, got {target.dtype}")
            t = target.reshape(-1).long()
            if t.numel() == 1:
                t = t.expand(n)
        elif isinstance(target, Sequence) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in target
        ):
            t = torch.tensor(list(target), dtype=torch.long)
        else:
            raise InputTypeError(
                f"target must be an int, a sequence of ints or a LongTensor, got {target!r}"
            )
        if t.numel() != n:
            raise InputError(f"target has {t.numel()} entries for a batch of {n}")
        bad = (t < 0) | (t >= k)
        if bool(bad.any()):
            raise InputError(
                f"target {t[bad][0].item()} out of range: the model has {k} classes (0..{k - 1})"
            )
        return t.to(logits.device)

    def _run(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        handler: Callable[..., Any],
        batch: int | None = None,
        pre: Callable[[int, nn.Module, tuple], None] | None = None,
    ) -> torch.Tensor:
        """One forward pass with ``handler`` at every site (and ``pre`` before each site
        call); checks the site count."""
        with hooks.pass_with(handler, pre) as count:
            logits = self._forward(x, batch)
        n = count()
        if n == 0:
            raise ModelError(
                "no site was called during the forward pass: the chosen activation modules "
                f"({', '.join(sorted({type(m).__name__ for _, m in self._modules}))}) are "
                "registered but never used"
            )
        if hooks.names and n != len(hooks.names):
            raise ModelError(
                f"the model called its activation modules {n} times in this pass but "
                f"{len(hooks.names)} times before: the forward pass must not depend on the data"
            )
        return logits

    def _score_pass(
        self, hooks: SiteHooks, x: torch.Tensor, target: Any, keep_grads: bool = False
    ) -> tuple[
        torch.Tensor,
        list[torch.Tensor] | None,
        list[torch.Tensor] | None,
        torch.Tensor,
        SiteLayout,
        torch.Tensor,
    ]:
        """Forward with every neuron on, then one backward for NeuronMCT |a * dy/da|.

        Returns logits, site outputs a and dy/da (both only with ``keep_grads``), targets,
        the layout and the flat scores. Without ``keep_grads`` the scores are computed
        inside the backward (:func:`_scores_in_backward`), which frees each site's output
        and gradient as soon as its score is written, as a plain gradient would. Scores
        that are not finite raise an InputError.
        """
        while True:
            logits, acts = self._recorded_forward(hooks, x)
            tgt = self._resolve_target(target, logits)
            y = logits.gather(1, tgt[:, None]).sum()
            layout = SiteLayout.from_tensors(acts)
            if keep_grads or self._scores_in_backward is False:
                break
            contrib = _scores_in_backward(y, acts, layout)  # empties acts
            self._scores_in_backward = contrib is not None
            if contrib is not None:
                return logits.detach(), None, None, tgt, layout, contrib
            # the backward is spent: score again from captured gradients, forward included
        grads, contrib = _captured_scores(y, acts, layout)
        check_finite_scores(contrib)
        kept = ([a.detach() for a in acts], grads) if keep_grads else (None, None)
        return logits.detach(), *kept, tgt, layout, contrib

    def _recorded_forward(
        self, hooks: SiteHooks, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward with every neuron on, keeping each site's output in the graph; copies
        of them when the model writes into site outputs later (found out and re-run)."""
        for _attempt in range(2):
            acts: list[torch.Tensor] = []
            versions: list[int] = []
            nodes: list[tuple[Any, nn.Module | None]] | None = [] if self._premask is None else None
            protect = self._protect

            def record(
                i: int,
                name: str,
                out: torch.Tensor,
                acts=acts,
                versions=versions,
                protect=protect,
                nodes=nodes,
                by_name=self._module_by_name,
            ) -> torch.Tensor | None:
                acts.append(out)
                versions.append(out._version)
                if nodes is not None:  # the node that made the output, before later ops
                    nodes.append((out.grad_fn, by_name.get(name)))
                return out.clone() if protect else None

            xg = x.detach().requires_grad_(True)
            logits = self._run(hooks, xg, record)
            if nodes is not None:
                self._premask = _premask_sites(logits, nodes)
            if protect or all(a._version == v for a, v in zip(acts, versions, strict=True)):
                break
            self._protect = True  # a later op wrote into a site output: record copies
        return logits, acts

    def _masked_pass(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        masks: list[torch.Tensor],
        fill: Callable[[int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward/backward with each site's output multiplied by its 0/1 weights
        (a product is cheaper than torch.where, forward and backward). Outputs of ReLU and
        ReLU6 go through :class:`_MaskedGate` where that is exact, which drops the
        backward product; not when the model writes into site outputs later. ``fill(i)``,
        if given, writes site i's weights just before they are used (still in the cache
        for the product, instead of read back from memory)."""
        by_name = self._module_by_name
        gate = not self._protect  # the gate keeps the masked output for its backward
        # a user's hook anywhere could hold a site input that would change under it
        approved = (self._premask or []) if _only_our_hooks(self._net, hooks.ids) else []
        premasked = [False] * len(masks)

        def pre(i: int, module: nn.Module, args: tuple) -> None:
            # the same module, with the inplace flag it had when it was approved
            ok = i < len(approved) and approved[i] == (module, getattr(module, "inplace", False))
            if ok and _premask_ok(module, args, masks[i]):
                if fill is not None:
                    fill(i)
                with torch.no_grad():
                    args[0].mul_(masks[i])
                premasked[i] = True

        def apply(i: int, name: str, out: torch.Tensor) -> torch.Tensor | None:
            if premasked[i]:
                return None
            if fill is not None:
                fill(i)
            return _scale(out, masks[i], by_name.get(name), hooks.inputs, gate, hooks.ids)

        xg = x.detach().requires_grad_(True)
        logits = self._run(hooks, xg, apply, pre=pre)
        stray = hooks.stray
        try:
            (g,) = _grad(logits.gather(1, tgt[:, None]).sum(), xg)
        except ModelError:
            if not any(premasked):
                raise
            # some node saved a site input that was masked in place (autograd's version
            # check): mask outputs instead, from now on
            self._premask = [None] * len(masks)
            return self._masked_pass(hooks, x, tgt, masks, fill)
        if hooks.stray != stray:  # sites ran again, unmasked, inside the backward
            raise ModelError(f"The model's sites ran again inside the backward: {_CHECKPOINT}.")
        return logits.detach(), g

    def _pathway_pass(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        method: str,
        ranking: Ranking,
        contrib: torch.Tensor,
        layout: SiteLayout,
        names: list[str],
        logits: torch.Tensor,
        sparsity: float,
        scope: str,
        granularity: str,
        sorted_selection: bool = False,
    ) -> Explanation:
        flat = ranking.scores
        fill, t = None, None
        if (
            sorted_selection
            and scope == "global"
            and granularity == "neuron"
            and flat.dtype == x.dtype
            and ranking.usable
        ):
            t = ranking.threshold(keep_count(layout.total, sparsity))
        if t is None:
            weights = select(
                flat, layout, sparsity, scope, granularity, ranking if sorted_selection else None
            ).to(x.dtype)
            masks = layout.views(weights)
        else:  # one comparison per site, made as the masked pass reaches the site
            weights = memory.empty_like(flat)
            scores, masks = layout.views(flat), layout.unversioned_views(weights)

            def fill(i: int) -> None:
                torch.ge(scores[i], t.view(-1, *[1] * (scores[i].dim() - 1)), out=masks[i])

        p_logits, sal = self._masked_pass(hooks, x, tgt, masks, fill)
        return Explanation(
            saliency=sal,
            scores=layout.views(flat),
            pathway=Pathway(weights, names, sparsity, scope, granularity, layout),
            target=tgt,
            logits=logits,
            pathway_logits=p_logits,
            method=method,
            inputs=x,
            contributions=layout.views(contrib),
            explainer=self,
            _flat_contrib=contrib,
            _layout=layout,
            _ranking=ranking,
        )

    def _at_sparsity(self, e: Explanation, sparsity: float) -> Explanation:
        """A new selection from ``e``'s cached scores and one masked pass."""
        with self._session(e.inputs) as hooks:
            hooks.names.extend(e.site_names)
            return self._pathway_pass(
                hooks,
                e.inputs,
                e.target,
                e.method,
                e._ranking,
                e._flat_contrib,
                e._layout,
                e.site_names,
                e.logits,
                sparsity,
                e.scope,
                e.granularity,
                sorted_selection=True,
            )

    # ------------------------------------------------------------------ NeuronIntGrad
    def _intgrad(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        acts: list[torch.Tensor],
        grads: list[torch.Tensor],
        layout: SiteLayout,
        opts: dict[str, Any],
        progress: ProgressFn | None,
    ) -> torch.Tensor:
        """|a * mean over alpha in {0, 1/m, ..., 1} of dy/d(alpha a)|, one site at a time.

        alpha = 1 reuses the score pass's gradient. For a single image the layers before
        the site are replayed from one cached forward pass at batch 1, the alpha-scaled
        copies broadcast from the site on, and a convolution or linear layer that reads
        them runs once at batch 1 (:mod:`.affine`); each shortcut is checked once per
        explainer against the full-batch computation.
        """
        steps, chunk = int(opts["steps"]), int(opts["batch_size"])
        alphas = torch.arange(steps, dtype=x.dtype, device=x.device) / steps  # 0 .. (m-1)/m
        n = x.shape[0]
        flat = memory.empty((n, layout.total), x.dtype, x.device)
        out_views = layout.views(flat)
        total = len(acts)
        with contextlib.ExitStack() as stack:
            replay = None
            if self._replay_ok is not False or (n == 1 and self._broadcast_replay_ok is not False):
                replay = stack.enter_context(PrefixReplay(self._net, lambda: hooks.count))
                with torch.no_grad(), replay.recording():
                    self._run(hooks, x, lambda i, name, out: None)
            shortcut = None
            if n == 1:
                ours = replay.hook_ids if replay is not None else set()
                shortcut = stack.enter_context(AffineShortcut(self._net, ours))
            # last site first: the one-time checks of the prefix shortcuts then run where
            # they are cheapest (the shortest suffix)
            for done, i in enumerate(reversed(range(total)), start=1):
                gsum = self._alpha_grad_sum(hooks, x, tgt, i, alphas, chunk, replay, shortcut)
                gsum += grads[i]
                torch.mul(acts[i], gsum, out=out_views[i])
                if progress is not None:
                    progress(done, total)
        flat.abs_().div_(steps + 1)
        return flat

    def _alpha_grad_sum(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        site: int,
        alphas: torch.Tensor,
        chunk: int,
        replay: PrefixReplay | None,
        shortcut: AffineShortcut | None = None,
    ) -> torch.Tensor:
        """Sum over alphas of dy/dz at z = alpha * a_site, shaped like the site output.

        Tries the cheapest layout that this model supports: for one image, the prefix
        replayed from cached outputs at batch 1 and broadcast from the site, then the
        prefix run at batch 1 and broadcast; then prefix replay at the batch size; then
        the plain batched pass. Each layout is checked once per explainer against the
        plain pass, on two alphas (enough to catch a layout the model does not support,
        at a fifth of the cost of all of them).
        """

        def attempt(flag: str, **kw: Any) -> torch.Tensor | None:
            try:
                if getattr(self, flag) is None:
                    probe = alphas[[0, -1]] if alphas.numel() > 2 else alphas
                    g = self._alpha_grads(hooks, x, tgt, site, probe, chunk, **kw)
                    ref = self._alpha_grads(hooks, x, tgt, site, probe, chunk)
                    tol = 1e-6 * float(ref.abs().max()) + 1e-12
                    setattr(self, flag, bool(torch.allclose(g, ref, rtol=1e-4, atol=tol)))
                    if not getattr(self, flag):
                        return None
                return self._alpha_grads(hooks, x, tgt, site, alphas, chunk, **kw)
            except (ModelError, RuntimeError):
                setattr(self, flag, False)
                return None

        layouts: list[tuple[str, dict[str, Any]]] = []
        if x.shape[0] == 1:
            if replay is not None:
                layouts.append(
                    (
                        "_broadcast_replay_ok",
                        {"broadcast": True, "replay": replay, "shortcut": shortcut},
                    )
                )
            layouts.append(("_broadcast_ok", {"broadcast": True, "shortcut": shortcut}))
        if replay is not None:
            layouts.append(("_replay_ok", {"replay": replay}))
        for flag, kw in layouts:
            if getattr(self, flag) is not False:
                g = attempt(flag, **kw)
                if g is not None:
                    return g
        return self._alpha_grads(hooks, x, tgt, site, alphas, chunk)

    def _alpha_grads(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        site: int,
        alphas: torch.Tensor,
        chunk: int,
        broadcast: bool = False,
        replay: PrefixReplay | None = None,
        shortcut: AffineShortcut | None = None,
    ) -> torch.Tensor:
        """Sum over alphas of dy/dz at z = alpha * a_site, per sample.

        Every (sample, alpha) pair is a row of a batched pass. The layers before the
        site run without recording a graph (only the suffix is differentiated); with
        ``broadcast`` (one image) they even run at batch 1, and the site output turns
        into the batch of alphas, which later layers broadcast against; with
        ``replay`` the calls that end before the site are not computed at all; with
        ``shortcut`` (broadcast only) linear layers that read the alpha batch run at
        batch 1 (:mod:`.affine`).
        """
        n, m = x.shape[0], alphas.numel()
        shortcut = shortcut if broadcast else None
        rows_sample = torch.arange(n, device=x.device).repeat_interleave(m)
        rows_alpha = alphas.repeat(n)
        total: torch.Tensor | None = None
        for idx in torch.arange(n * m, device=x.device).split(chunk):
            si, al = rows_sample[idx], rows_alpha[idx]
            zs: list[torch.Tensor] = []

            def scale(i: int, name: str, out: torch.Tensor, al=al, zs=zs) -> torch.Tensor | None:
                if i != site:
                    return None
                torch.set_grad_enabled(True)  # record from here on; no_grad restores it
                z = alpha_batch(out.detach(), al)
                z.requires_grad_(True)
                zs.append(z)
                ret = z.clone() if self._protect else z
                if shortcut is not None:
                    shortcut.arm(ret, out, al)
                return ret

            rows = si[:1] if broadcast else si
            replaying = replay.replaying(site, rows) if replay else contextlib.nullcontext()
            with torch.no_grad(), replaying:
                logits = self._run(hooks, x[:1] if broadcast else x[si], scale, batch=len(si))
            y = logits.gather(1, tgt[si][:, None]).sum()
            if shortcut is not None and shortcut.used:
                src = shortcut.source
                g, g_short = _grad(y, [zs[0], src], allow_unused=True)
                if g_short is None:
                    g_short = torch.zeros_like(src)
                g = g_short if g is None else sum_rows(g).add_(g_short)
            else:
                (g,) = _grad(y, zs[0])
                if broadcast:
                    g = sum_rows(g)
            if shortcut is not None:
                shortcut.arm(None, None, None)
            if total is None:
                total = torch.zeros((n, *g.shape[1:]), dtype=g.dtype, device=g.device)
            if broadcast:  # one image: g is already the sum over its rows
                total += g
            else:  # rows are grouped by sample: sum each group (index_add_ is slow on NHWC)
                start = 0
                for s, k in zip(*torch.unique_consecutive(si, return_counts=True), strict=True):
                    total[int(s)] += sum_rows(g[start : start + int(k)])[0]
                    start += int(k)
        assert total is not None
        return total

    # ------------------------------------------------------------------ Greedy
    def _greedy(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        contrib: torch.Tensor,
        layout: SiteLayout,
        sparsity: float,
        scope: str,
        granularity: str,
        opts: dict[str, Any],
        progress: ProgressFn | None,
    ) -> torch.Tensor:
        """Remove ``step_fraction`` of the neurons at a time, re-scoring by NeuronMCT.

        Returns a ranking key: removed neurons get their removal round (earliest lowest),
        the survivors rank above every removed one by their last score, so selecting
        from the key at this sparsity gives the greedy pathway (and at a lower sparsity
        the greedy pathway of that round).
        """
        if granularity != "neuron":
            raise OptionError("greedy selection supports granularity='neuron' only")
        frac = float(opts["step_fraction"])
        if scope == "global":
            groups = [(0, layout.total)]
        else:
            groups = list(zip(layout.offsets, layout.sizes, strict=True))
        targets = [keep_count(size, sparsity) for _, size in groups]
        steps = [max(1, round(frac * size)) for _, size in groups]
        kept_now = [size for _, size in groups]
        rounds = max(
            math.ceil((size - t) / st) if size > t else 0
            for (_, size), t, st in zip(groups, targets, steps, strict=True)
        )
        key = torch.full_like(contrib, float(rounds))
        mask = torch.ones_like(contrib, dtype=torch.bool)
        scores = contrib
        for r in range(rounds):
            if r > 0:
                scores = self._masked_scores(hooks, x, tgt, layout.views(mask), layout)
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
            if progress is not None:
                progress(r + 1, rounds)
        if rounds:
            scores = self._masked_scores(hooks, x, tgt, layout.views(mask), layout)
        # survivors: rounds + their last score squashed into [0, 1)
        top = scores.amax(dim=1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
        key = torch.where(mask, float(rounds) + 0.5 * scores / top, key)
        return key

    def _masked_scores(
        self,
        hooks: SiteHooks,
        x: torch.Tensor,
        tgt: torch.Tensor,
        masks: list[torch.Tensor],
        layout: SiteLayout,
    ) -> torch.Tensor:
        """NeuronMCT scores |z * dy/dz| of the network restricted to ``masks``."""
        zs: list[torch.Tensor] = []

        def apply(i: int, name: str, out: torch.Tensor) -> torch.Tensor:
            z = out * masks[i]
            zs.append(z)
            return z.clone() if self._protect else z

        logits = self._run(hooks, x.detach().requires_grad_(True), apply)
        return _captured_scores(logits.gather(1, tgt[:, None]).sum(), zs, layout)[1]


# Activations whose autograd node keeps its input, not its output (out-of-place forms):
# their output may be scaled in place, saving a fresh buffer per site.
_KEEPS_INPUT = {
    nn.ReLU6: "HardtanhBackward0",
    nn.Hardtanh: "HardtanhBackward0",
    nn.LeakyReLU: "LeakyReluBackward0",
    nn.PReLU: "PreluKernelBackward0",
}


class _Scale(torch.autograd.Function):
    """a * w (w a constant 0/1 mask) with its result and gradient in the engine's recycled
    buffers (:mod:`.memory`): used for large activations that cannot be scaled in place."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return torch.mul(a, w, out=memory.empty_like(a))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (w,) = ctx.saved_tensors
        return torch.mul(g, w, out=memory.empty_like(g)), None


_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default
_HARDTANH_BACKWARD = torch.ops.aten.hardtanh_backward.default


class _MaskedGate(torch.autograd.Function):
    """y = act(x) * w for a ReLU or a Hardtanh with min_val >= 0 (ReLU6), w a constant 0/1
    mask, as a function of the activation's input x. The backward gates the gradient by
    y alone, in one pass like the activation's own backward: a removed neuron's output is
    0, outside the open range where the activation passes gradient, so the gate is
    already w times the activation's derivative."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, lo: float, hi: float | None
    ) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.lo, ctx.hi = lo, hi
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (y,) = ctx.saved_tensors
        if ctx.hi is None:
            return _THRESHOLD_BACKWARD(g, y, ctx.lo), None, None, None
        return _HARDTANH_BACKWARD(g, y, ctx.lo, ctx.hi), None, None, None


def _gated_mask(
    out: torch.Tensor, w: torch.Tensor, module: nn.Module | None, inputs: tuple, ours: set[int]
) -> torch.Tensor | None:
    """The masked output through :class:`_MaskedGate` where that is exact, else None."""
    gate = _gate_kind(module)
    if gate is None:
        return None
    lo, hi, node = gate
    x = inputs[0] if inputs else None
    fn = out.grad_fn
    if (
        getattr(module, "inplace", False)
        or not isinstance(x, torch.Tensor)
        or x.grad_fn is None
        or type(fn).__name__ != node
        or fn.next_functions[0][0] is not x.grad_fn
        or not _output_unseen(module)
        or not set(module._forward_pre_hooks) <= ours
        or nn.modules.module._global_forward_pre_hooks
    ):
        return None
    return _MaskedGate.apply(x, out.detach().mul_(w), lo, hi)


def _gate_kind(module: nn.Module | None) -> tuple[float, float | None, str] | None:
    """(lo, hi, name of its autograd node) for a ReLU (hi None) or a Hardtanh/ReLU6 with
    min_val >= 0: activations that pass gradient only on the open range (lo, hi), so a
    removed neuron's 0 blocks it. None for any other module."""
    kind = type(module)
    if kind is nn.ReLU:
        return 0.0, None, "ReluBackward0"
    if kind in (nn.ReLU6, nn.Hardtanh) and module.min_val >= 0:
        return float(module.min_val), float(module.max_val), "HardtanhBackward0"
    return None


def _premask_sites(
    logits: torch.Tensor, nodes: Sequence[tuple[Any, nn.Module | None]]
) -> list[tuple[nn.Module, bool] | None]:
    """Per site (from a recorded pass: the node that made its output, and its module),
    the module and its inplace flag when the masked pass may multiply the site's input by
    the mask in place just before the call, else None.

    For ReLU, and ReLU6/Hardtanh with min_val 0, act(z * w) = act(z) * w for 0/1 weights
    w, and the activation's own backward (gated by its saved input or result, which is
    then 0 where w is) is already the masked backprop: no product in the backward, no
    extra autograd node. Safe when nothing else reads z: an in-place module overwrites
    z itself, and for the others the graph from the logits must hold no other edge into
    z (another differentiable reader, such as a residual that adds z back).
    """
    # the edge from each candidate activation to its input's node
    edges = [fn.next_functions[0] if _premask_node(fn, m) else None for fn, m in nodes]
    counts = edge_counts(logits.grad_fn)  # readers of every output in the graph
    out: list[tuple[nn.Module, bool] | None] = []
    for (_fn, module), e in zip(nodes, edges, strict=True):
        inplace = bool(getattr(module, "inplace", False))
        ok = e is not None and (inplace or (counts[e] == 1 and not _saves_output(e[0])))
        out.append((module, inplace) if ok else None)
    return out


def _saves_output(node: Any) -> bool:
    """Whether an autograd node kept its own output for its backward (say, a ReLU feeding
    a ReLU6): that output may not be changed in place. Autograd names saved outputs
    ``result``; any other saver is caught by autograd's version check (see _masked_pass)."""
    return any(a.startswith("_saved_result") for a in dir(node))


def _premask_node(fn: Any, module: nn.Module | None) -> bool:
    """A gating activation with act(0) = 0 (lo == 0) whose output node is its own, fed by
    a node of this pass."""
    gate = _gate_kind(module)
    if gate is None or gate[0] != 0 or (gate[1] is not None and gate[1] <= 0):
        return False
    if fn is None or type(fn).__name__ != gate[2]:
        return False
    return bool(fn.next_functions) and fn.next_functions[0][0] is not None


def _premask_ok(module: nn.Module, args: tuple, w: torch.Tensor) -> bool:
    """This call's input may be masked in place: one tensor made in this pass (never a
    leaf such as the caller's input), shaped like the mask, and not a view of a tensor
    that others may read (unless the module overwrites it anyway)."""
    if len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return False
    z = args[0]
    return (
        z.grad_fn is not None
        and z.shape == w.shape
        and z.dtype == w.dtype
        and z.device == w.device
        and (z._base is None or getattr(module, "inplace", False))
    )


def _only_our_hooks(model: nn.Module, ours: set[int]) -> bool:
    """No hook but ours on any module of the model, and no global module hook: nobody
    else can hold a site input, or see one change (checked once per pass)."""
    if global_hooks():
        return False
    return all(
        set(m._forward_hooks) <= ours
        and set(m._forward_pre_hooks) <= ours
        and not m._backward_hooks
        and not m._backward_pre_hooks
        for m in model.modules()
    )


def _output_unseen(module: nn.Module) -> bool:
    """No forward hook but ours on the site module, and no global one: nobody else has
    seen its output, so it may be changed in place."""
    return len(module._forward_hooks) == 1 and not nn.modules.module._global_forward_hooks


def _scale(
    out: torch.Tensor,
    w: torch.Tensor,
    module: nn.Module | None,
    inputs: tuple = (),
    gate: bool = False,
    ours: set[int] | None = None,
) -> torch.Tensor:
    """A site's output times its 0/1 weights, the cheapest exact way: with ``gate``, a
    ReLU/ReLU6 output through :class:`_MaskedGate` (``inputs`` are the site call's);
    else in place where autograd allows it (the activation kept its input and nobody
    else has seen the output); else into recycled buffers or a plain product."""
    if gate:
        gated = _gated_mask(out, w, module, inputs, ours or set())
        if gated is not None:
            return gated
    kind = type(module)
    if (
        kind in _KEEPS_INPUT
        and type(out.grad_fn).__name__ == _KEEPS_INPUT[kind]
        and not getattr(module, "inplace", False)
        and _output_unseen(module)
    ):
        return out.mul_(w)
    if out.is_contiguous() and out.numel() * out.element_size() >= memory.RECYCLE_BYTES:
        return _Scale.apply(out, w)
    return out * w


_CHECKPOINT = (
    "activation checkpointing recomputes the forward during the backward, which "
    "the explainer's hooks cannot follow: explain the model without it"
)


def _grad(y: torch.Tensor, inputs: Any, **kw: Any) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad``, with a failure inside the model's backward reported as a
    :class:`ModelError` that names it instead of a bare RuntimeError."""
    try:
        return torch.autograd.grad(y, inputs, **kw)
    except RuntimeError as e:
        hint = f" ({_CHECKPOINT})" if "checkpoint" in str(e) else ""
        raise ModelError(f"the model's backward pass failed{hint}: {e}") from e


def _scores_in_backward(
    y: torch.Tensor, acts: list[torch.Tensor], layout: SiteLayout
) -> torch.Tensor | None:
    """NeuronMCT |a * dy/da| of every site, each computed by a hook on the site's output
    as soon as the backward reaches it, into one flat (N, total) buffer.

    Capturing every site's gradient would hold all of them, and every site output, until
    the end of the pass. Here ``acts`` is emptied and each hook drops its site's output
    once used, so the pass needs no more memory than a plain gradient (fresh memory costs
    a page fault per 4 KiB). The backward runs down to the first site only. A hook that
    never fires means a site off the path from the logit to the first site (its gradient
    was not computed): None is returned then, and the caller scores from captured
    gradients. Each site's scores are summed while still in the cache: scores that are
    not finite raise an InputError without another pass over all of them.
    """
    if not all(a.requires_grad for a in acts):
        return None
    n = acts[0].shape[0]
    flat = memory.empty((n, layout.total), acts[0].dtype, acts[0].device)
    views = layout.views(flat)
    held: list[torch.Tensor | None] = [a.detach() for a in acts]
    first = acts[0]
    fired = [0]
    sums: list[torch.Tensor] = []  # each site's, summed while its scores are in the cache

    def hook(i: int) -> Callable[[torch.Tensor], None]:
        def h(g: torch.Tensor) -> None:
            a, held[i] = held[i], None
            sums.append(torch.mul(a, g, out=views[i]).abs_().sum())
            fired[0] += 1

        return h

    handles = [a.register_hook(hook(i)) for i, a in enumerate(acts) if i > 0]
    acts.clear()
    try:
        (g0,) = _grad(y, first, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    if g0 is None or fired[0] != len(views) - 1:
        return None
    sums.append(torch.mul(held[0], g0, out=views[0]).abs_().sum())
    check_finite_scores(flat, torch.stack(sums).sum())
    return flat


def _captured_scores(
    y: torch.Tensor, acts: list[torch.Tensor], layout: SiteLayout
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """dy/da of every site, captured at once (zeros for a site off every path to y), and
    the NeuronMCT scores |a * dy/da| from them."""
    grads = _grad(y, acts, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads, strict=True)]
    return grads, _contributions([a.detach() for a in acts], grads, layout)


def _contributions(
    acts: list[torch.Tensor], grads: list[torch.Tensor], layout: SiteLayout
) -> torch.Tensor:
    """NeuronMCT |a * dy/da| of every site, written into one flat (N, total) buffer."""
    n = acts[0].shape[0]
    flat = memory.empty((n, layout.total), acts[0].dtype, acts[0].device)
    for a, g, v in zip(acts, grads, layout.views(flat), strict=True):
        torch.mul(a, g, out=v).abs_()  # site by site, while the product is still in cache
    return flat


@contextlib.contextmanager
def _grad_enabled() -> Iterator[None]:
    """Gradients on, even when the caller is inside no_grad or inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _progress_fn(progress: Any, method: str) -> Any:
    """Normalise the progress option to None, a tqdm-backed callable, or the user's callable."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(desc=method, unit="step")

        class _Bar:
            def __call__(self, done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            def close(self) -> None:
                bar.close()

        return _Bar()
    if callable(progress):
        return progress
    raise OptionError(f"progress must be None, True or a callable(done, total), got {progress!r}")
