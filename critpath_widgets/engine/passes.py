"""The passes every method is built of: forward, score pass and masked pass.

A pass runs the net (the model, or its folded twin) with :class:`~.sites.SiteHooks`
routing every site call to a handler. What the passes of one explainer share lives in
one :class:`PassState`: the sites, the net that runs, the session's hooks, and what
earlier passes found out about the model (it writes into site outputs; which site
inputs may be masked in place; whether scores can be taken inside the backward).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import Cancelled, InputError, ModelError
from . import masking, memory
from .axes import feature_axis_last
from .layout import SiteLayout
from .pathway import check_finite_scores
from .precision import Float64Net
from .site_spec import SiteChoice
from .sites import SiteHooks
from .validate import resolve_target


@dataclass(eq=False)
class PassState:
    """What every pass of one explainer reads, and what earlier passes found out."""

    #: (name, module) of the site modules
    modules: list[tuple[str, nn.Module]]
    #: what runs: the model, or its folded twin (chosen per call by the explainer)
    net: nn.Module
    module_by_name: dict[str, nn.Module] = field(init=False)
    #: the site hooks of the call in progress (None between calls)
    hooks: SiteHooks | None = None
    #: the model writes into site outputs later: passes record copies of them
    protect: bool = False
    #: per site, (its module, its inplace flag) when its input may be masked in place
    #: before the call (:func:`.masking.premask_sites`), read off the first score pass
    premask: list[tuple[nn.Module, bool] | None] | None = None
    #: False once a score pass found a site whose gradient a backward to the first site
    #: does not compute: scores are then taken from captured gradients
    scores_in_backward: bool | None = None
    #: the resolved ``sites=`` (None: the modules alone, no functions)
    choice: SiteChoice | None = None
    #: whether the forward calls any of the chosen activation functions (None: not run
    #: yet); False saves the function mode's cost on every later pass
    functional_seen: bool | None = None

    def __post_init__(self) -> None:
        self.module_by_name = dict(self.modules)

    def site_hooks(self) -> SiteHooks:
        """The site hooks of one call: the modules, and the functions while the model
        may call them."""
        functions = self.choice.functions if self.choice is not None else frozenset()
        if self.functional_seen is False:
            functions = frozenset()
        # functional sites are named by module paths in the model (the float64 wrapper
        # holds it as a child; the folded twin has the model's paths)
        root = self.net.model if isinstance(self.net, Float64Net) else self.net
        return SiteHooks(self.modules, functions, root)

    @contextlib.contextmanager
    def using(self, hooks: SiteHooks) -> Iterator[PassState]:
        """The passes inside ``with`` route their site calls through ``hooks``."""
        outer, self.hooks = self.hooks, hooks
        try:
            yield self
        finally:
            self.hooks = outer


class ScorePass(NamedTuple):
    """What the score pass returns (site outputs and gradients only when kept)."""

    logits: torch.Tensor
    acts: list[torch.Tensor] | None
    grads: list[torch.Tensor] | None
    target: torch.Tensor
    layout: SiteLayout
    #: NeuronMCT |a * dy/da|, flat (N, total neurons)
    contrib: torch.Tensor


def forward(st: PassState, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The net's logits for ``x``, checked to be (batch, classes); a failure inside the
    model is reported as a :class:`ModelError`."""
    try:
        out = st.net(x)
    except (Cancelled, ModelError, InputError):
        raise
    except RuntimeError as e:
        raise ModelError(f"the model's forward pass failed on input {tuple(x.shape)}: {e}") from e
    batch = x.shape[0] if batch is None else batch
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"the model must return logits shaped (N, classes); got {shape} for a batch of {batch}"
        )
    return out


def run(
    st: PassState,
    x: torch.Tensor,
    handler: masking.SiteHandler,
    batch: int | None = None,
    pre: masking.PreHandler | None = None,
) -> torch.Tensor:
    """One forward pass with ``handler`` at every site (and ``pre`` before each site
    call); checks the site count."""
    hooks = st.hooks
    assert hooks is not None
    with hooks.pass_with(handler, pre) as count:
        logits = forward(st, x, batch)
    n = count()
    if hooks.record_functions and st.functional_seen is None:
        st.functional_seen = hooks.functional > 0
        hooks.record_functions = st.functional_seen
    if n == 0 and not st.modules and st.choice is not None:
        raise ModelError(st.choice.no_sites_message(st.net))
    if n == 0:
        raise ModelError(
            "no site was called during the forward pass: the chosen activation modules "
            f"({', '.join(sorted({type(m).__name__ for _, m in st.modules}))}) are "
            "registered but never used"
        )
    if hooks.names and n != len(hooks.names):
        raise ModelError(
            f"the model called its activation modules {n} times in this pass but "
            f"{len(hooks.names)} times before: the forward pass must not depend on the data"
        )
    return logits


def score_pass(st: PassState, x: torch.Tensor, target: Any, keep_grads: bool = False) -> ScorePass:
    """Forward with every neuron on, then one backward for NeuronMCT |a * dy/da|.

    Site outputs a and dy/da are returned only with ``keep_grads``. Without it the
    scores are computed inside the backward (:func:`scores_in_backward`), which frees
    each site's output and gradient as soon as its score is written, as a plain gradient
    would. Scores that are not finite raise an InputError.
    """
    while True:
        logits, acts = recorded_forward(st, x)
        tgt = resolve_target(target, logits)
        y = logits.gather(1, tgt[:, None]).sum()
        layout = SiteLayout.from_tensors(acts, [feature_axis_last(a) for a in acts])
        if keep_grads or st.scores_in_backward is False:
            break
        contrib = scores_in_backward(y, acts, layout)  # empties acts
        st.scores_in_backward = contrib is not None
        if contrib is not None:
            return ScorePass(logits.detach(), None, None, tgt, layout, contrib)
        # the backward is spent: score again from captured gradients, forward included
    grads, contrib = captured_scores(y, acts, layout)
    check_finite_scores(contrib)
    kept = ([a.detach() for a in acts], grads) if keep_grads else (None, None)
    return ScorePass(logits.detach(), *kept, tgt, layout, contrib)


def recorded_forward(st: PassState, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward with every neuron on, keeping each site's output in the graph; copies
    of them when the model writes into site outputs later (found out and re-run)."""
    for _attempt in range(2):
        acts: list[torch.Tensor] = []
        versions: list[int] = []
        nodes: list[tuple[Any, nn.Module | None]] | None = [] if st.premask is None else None
        protect = st.protect

        def record(
            i: int,
            name: str,
            out: torch.Tensor,
            acts=acts,
            versions=versions,
            protect=protect,
            nodes=nodes,
            by_name=st.module_by_name,
        ) -> torch.Tensor | None:
            acts.append(out)
            versions.append(out._version)
            if nodes is not None:  # the node that made the output, before later ops
                nodes.append((out.grad_fn, by_name.get(name)))
            return out.clone() if protect else None

        xg = x.detach().requires_grad_(True)
        logits = run(st, xg, record)
        if nodes is not None:
            st.premask = masking.premask_sites(logits, nodes)
        if protect or all(a._version == v for a, v in zip(acts, versions, strict=True)):
            break
        st.protect = True  # a later op wrote into a site output: record copies
    return logits, acts


def masked_pass(
    st: PassState,
    x: torch.Tensor,
    tgt: torch.Tensor,
    masks: list[torch.Tensor],
    fill: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward/backward with each site's output multiplied by its 0/1 weights, the
    cheapest exact way per site (:mod:`.masking`); returns the logits and the gradient
    of the target logit with respect to the input. ``fill(i)``, if given, writes site
    i's weights just before they are used."""
    pre, apply, premasked = masking.site_handlers(st, masks, fill)
    xg = x.detach().requires_grad_(True)
    logits = run(st, xg, apply, pre=pre)
    hooks = st.hooks
    assert hooks is not None
    stray = hooks.stray
    try:
        (g,) = grad(logits.gather(1, tgt[:, None]).sum(), xg)
    except ModelError:
        if not any(premasked):
            raise
        # some node saved a site input that was masked in place (autograd's version
        # check): mask outputs instead, from now on
        st.premask = [None] * len(masks)
        return masked_pass(st, x, tgt, masks, fill)
    if hooks.stray != stray:  # sites ran again, unmasked, inside the backward
        raise ModelError(f"The model's sites ran again inside the backward: {CHECKPOINT}.")
    return logits.detach(), g


def masked_scores(
    st: PassState,
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
        return z.clone() if st.protect else z

    logits = run(st, x.detach().requires_grad_(True), apply)
    return captured_scores(logits.gather(1, tgt[:, None]).sum(), zs, layout)[1]


CHECKPOINT = (
    "activation checkpointing recomputes the forward during the backward, which "
    "the explainer's hooks cannot follow: explain the model without it"
)


def grad(y: torch.Tensor, inputs: Any, **kw: Any) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad``, with a failure inside the model's backward reported as a
    :class:`ModelError` that names it instead of a bare RuntimeError."""
    try:
        return torch.autograd.grad(y, inputs, **kw)
    except RuntimeError as e:
        hint = f" ({CHECKPOINT})" if "checkpoint" in str(e) else ""
        raise ModelError(f"the model's backward pass failed{hint}: {e}") from e


def scores_in_backward(
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
        (g0,) = grad(y, first, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    if g0 is None or fired[0] != len(views) - 1:
        return None
    sums.append(torch.mul(held[0], g0, out=views[0]).abs_().sum())
    check_finite_scores(flat, torch.stack(sums).sum())
    return flat


def captured_scores(
    y: torch.Tensor, acts: list[torch.Tensor], layout: SiteLayout
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """dy/da of every site, captured at once (zeros for a site off every path to y), and
    the NeuronMCT scores |a * dy/da| from them."""
    grads = grad(y, acts, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads, strict=True)]
    return grads, contributions([a.detach() for a in acts], grads, layout)


def contributions(
    acts: list[torch.Tensor], grads: list[torch.Tensor], layout: SiteLayout
) -> torch.Tensor:
    """NeuronMCT |a * dy/da| of every site, written into one flat (N, total) buffer."""
    n = acts[0].shape[0]
    flat = memory.empty((n, layout.total), acts[0].dtype, acts[0].device)
    for a, g, v in zip(acts, grads, layout.views(flat), strict=True):
        torch.mul(a, g, out=v).abs_()  # site by site, while the product is still in cache
    return flat


@contextlib.contextmanager
def grad_enabled() -> Iterator[None]:
    """Gradients on, even when the caller is inside no_grad or inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
