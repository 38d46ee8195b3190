"""Batch-norm folding: run the model with each eval-mode BatchNorm folded into the
convolution that feeds it, without touching the user's model.

In eval mode a BatchNorm right after a convolution is a per-channel affine map, so
``bn(conv(x)) == conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)``. Every pass of the engine (score pass, masked pass,
plain gradient) then skips one memory-bound elementwise pass forward and one backward
per BatchNorm (``benchmarks/bench_engine.py`` prints the twin's gradient time). A
symmetric zero padding inside a folded convolution (TF-style "same" padding) moves into
the copy's own ``padding`` as well.

:class:`BatchNormFolding` builds a *twin* of the model: the folded convolutions are
shallow copies holding the folded weights, each folded BatchNorm is an ``Identity``, and
the containers on the way to them are shallow copies with their own child dicts.
Every other module (the sites among them) is the user's own object, shared, so hooks,
attributes and parameters are read live. A pair is folded only when one forward pass
shows the convolution's output going to the BatchNorm and nowhere else, and the folded
copy, run on the convolution's input there, gives the BatchNorm's output; the twin's
logits are checked against the model's once per build.

Never stale: on every call each pair's live tensors are compared in full with those its
fold was last computed from, and the pair is folded again where any value differs (an
edit through ``.data`` bumps no version counter, so nothing short of reading every value
could tell; the comparison reads what a refold would). Every module the twin copies or
replaces is compared on every call, attribute by attribute and child by child, by
identity, with what it held when the twin was built: any rebinding, replacement or new
hook rebuilds the twin or leaves the model itself to run. Whenever folding stands aside
for a reason the user can change (a hook, a model that keeps changing),
:attr:`BatchNormFolding.off_reason` says why and a
:class:`~critpath_widgets.errors.FoldingWarning` is issued once.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections import Counter, OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import FoldingWarning
from .graph import edge_counts
from .hooks import global_hooks
from .hooks import own_hooks as _hooked
from .validate import caller_level

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
_MAX_REBUILDS = 8


class _ProbeFailed(Exception):
    """The model's forward pass failed on the probing input."""


def _foldable_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and not m.transposed


def _foldable_bn(m: nn.Module) -> bool:
    return (
        type(m) in _BATCHNORMS
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
    )


def _snapshot(m: nn.Module) -> tuple:
    """Everything a copy of ``m`` took from it: its type, its attributes, and the entries
    of the three dicts a copy has of its own (children, parameters, buffers). Any other
    container (a list of modules, a config dict) is the very object the copy holds, so
    changes inside it are live. Held by reference and compared by identity, so a
    rebinding is seen even where the new object lands at the old one's address."""
    d, mods, params, bufs = vars(m), m._modules, m._parameters, m._buffers
    return (type(m), *d, *d.values(), *mods, *mods.values(), *params, *params.values(),
            *bufs, *bufs.values())  # fmt: skip


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and not any(map(operator.is_not, a, b))


class _ConvCall(NamedTuple):
    """A convolution call seen by the probe, as the BatchNorm after it will check it."""

    conv: nn.Module
    edge: tuple  # (autograd node, output index) of its output
    version: int  # of its output
    args: tuple
    arg_versions: tuple


def find_pairs(
    model: nn.Module, x: torch.Tensor, skip: set[int]
) -> tuple[list[tuple[nn.Module, nn.Module, nn.Module, nn.Module | None]], Any]:
    """Fold what one eval-mode forward on ``x`` shows may fold; also that forward's logits.

    A (convolution, BatchNorm) pair qualifies when the BatchNorm reads the convolution's
    untouched output and nothing else reads it, and when a folded copy of the
    convolution, run on the convolution's inputs right after the BatchNorm, gives the
    BatchNorm's output (a convolution that is not a plain one, say with weight
    standardisation, fails here). Returns (convolution, BatchNorm, folded copy, the zero
    padding moved into the copy or None) per pair. Modules whose id is in ``skip`` are
    left out.
    """
    convs = [m for m in model.modules() if _foldable_conv(m) and id(m) not in skip]
    bns = [m for m in model.modules() if _foldable_bn(m) and id(m) not in skip]
    if not convs or not bns:
        return [], None
    pads = [m for m in model.modules() if type(m) is nn.ZeroPad2d and id(m) not in skip]
    calls: Counter = Counter()
    checking = [False]  # our own copies are running: not the model's calls
    made: dict[int, _ConvCall] = {}  # by id of the output
    fed: dict[int, _ConvCall | None] = {}  # id(bn) -> the conv call it read
    checked: dict[int, tuple] = {}  # id(bn) -> (plain copy or None, (copy, pad) or None)
    pad_nodes: dict[Any, nn.Module] = {}  # the autograd node of each zero padding's output

    def versions(args: tuple) -> tuple:
        return tuple(a._version if isinstance(a, torch.Tensor) else None for a in args)

    def conv_hook(m: nn.Module, args: tuple, out: Any) -> None:
        calls[id(m)] += 1
        if isinstance(out, torch.Tensor):
            edge = (out.grad_fn, out.output_nr)
            made[id(out)] = _ConvCall(m, edge, out._version, args, versions(args))

    def bn_pre(m: nn.Module, args: tuple) -> None:
        calls[id(m)] += 1
        z = args[0] if args else None
        src = made.get(id(z)) if isinstance(z, torch.Tensor) else None
        if src is not None and (
            src.edge[0] is not z.grad_fn
            or src.version != z._version
            or versions(src.args) != src.arg_versions
        ):
            src = None  # changed in place in between
        fed[id(m)] = src

    def bn_hook(m: nn.Module, args: tuple, out: Any) -> None:
        src = fed.get(id(m))
        if src is None or not isinstance(out, torch.Tensor):
            return
        conv, cargs, want = src.conv, src.args, out.detach()
        checking[0] = True
        try:
            with torch.no_grad():
                plain = _folded_copy(conv, m)
                plain = plain if _close(plain(*cargs), want) else None
                padded = None
                pad = next((c for c in conv.children() if type(c) is nn.ZeroPad2d), None)
                if pad is not None:
                    c = _folded_copy(conv, m)
                    if _absorb_pad(c, pad) and _close(c(*cargs), want):
                        padded = (c, pad)
        finally:
            checking[0] = False
        checked[id(m)] = (plain, padded)

    def pad_hook(m: nn.Module, args: tuple, out: Any) -> None:
        if checking[0]:
            return
        calls[id(m)] += 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            pad_nodes[out.grad_fn] = m

    handles = [c.register_forward_hook(conv_hook) for c in convs]
    handles += [b.register_forward_pre_hook(bn_pre) for b in bns]
    handles += [b.register_forward_hook(bn_hook) for b in bns]
    handles += [p.register_forward_hook(pad_hook) for p in pads]
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
    except Exception as e:
        raise _ProbeFailed from e
    finally:
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or logits.grad_fn is None:
        return [], logits
    edges = edge_counts(logits.grad_fn)
    pairs = []
    for bn in bns:
        src = fed.get(id(bn))
        if src is None or calls[id(bn)] != 1:
            continue
        conv, (node, _) = src.conv, src.edge
        if not (
            calls[id(conv)] == 1
            and node is not None
            and edges[src.edge] == 1
            and conv.out_channels == bn.num_features
        ):
            continue
        plain, padded = checked.get(id(bn), (None, None))
        if padded is not None:
            # the padding is read by this convolution alone (TF-style "same" padding, as
            # in EfficientNet's Conv2dStaticSamePadding)
            inp = node.next_functions[0] if node.next_functions else (None, 0)
            pad = padded[1]
            if pad_nodes.get(inp[0]) is pad and calls[id(pad)] == 1 and edges[inp] == 1:
                pairs.append((conv, bn, padded[0], pad))
                continue
        if plain is not None:
            pairs.append((conv, bn, plain, None))
    return pairs, logits.detach()


def _absorb_pad(c: nn.Module, pad: nn.Module) -> bool:
    """Move a symmetric zero padding child of convolution copy ``c`` into its own
    ``padding`` (one copy of the input fewer, forward and backward)."""
    left, right, top, bottom = pad.padding
    if (
        left != right
        or top != bottom
        or c.padding_mode != "zeros"
        or isinstance(c.padding, str)
        or len(c.padding) != 2
    ):
        return False
    name = next(k for k, ch in c._modules.items() if ch is pad)
    c._modules[name] = nn.Identity()
    vars(c)["padding"] = (c.padding[0] + top, c.padding[1] + left)
    return True


def _close(got: Any, want: torch.Tensor) -> bool:
    """Equal up to rounding (relative to the largest value)."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
        return False
    tol = 1e-9 if want.dtype == torch.float64 else 1e-4
    scale = float(want.abs().max()) if want.numel() else 0.0
    return float((got - want).abs().max()) <= tol * scale + 1e-12


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded weight and bias from the live tensors, computed in float64 and rounded
    once to the weight's dtype: as close to the exact fold as that dtype allows."""
    w = conv.weight.detach()
    f64 = torch.float64
    s = torch.rsqrt(bn.running_var.detach().to(f64) + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.detach().to(f64)
    b = -bn.running_mean.detach().to(f64)
    if conv.bias is not None:
        b = b + conv.bias.detach().to(f64)
    b = b * s
    if bn.bias is not None:
        b = b + bn.bias.detach().to(f64)
    shape = (-1,) + (1,) * (w.dim() - 1)
    folded = w.to(f64) * s.to(w.device).view(shape)  # never in place: w may be float64
    return folded.to(w.dtype), b.to(device=w.device, dtype=w.dtype)


def _sources(conv: nn.Module, bn: nn.Module) -> list[torch.Tensor | None]:
    """Every live tensor a pair's fold is computed from."""
    ts = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    return [None if t is None else t.detach() for t in ts]


def _copies(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    return [None if t is None else t.clone() for t in tensors]


def _equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """The same values, compared in full (``.data`` edits bump no version counter)."""
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _folded_copy(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` with ``bn`` folded in."""
    c = _fresh(conv)
    _set_folded(c, conv, bn)
    return c


def _set_folded(copy_: nn.Module, conv: nn.Module, bn: nn.Module) -> None:
    """Give a convolution's copy the weight and bias with ``bn`` folded in."""
    with torch.no_grad():
        w, b = _fold(conv, bn)
    copy_._parameters["weight"] = nn.Parameter(w, requires_grad=False)
    copy_._parameters["bias"] = nn.Parameter(b, requires_grad=False)


def _fresh(m: nn.Module) -> nn.Module:
    """A shallow copy of ``m`` with dicts of its own (children, parameters, buffers,
    no hooks), in eval mode; the tensors stay shared."""
    c = copy.copy(m)
    # written into the copy's own __dict__: a module class may forward attribute writes
    # elsewhere (torch.compile's wrapper writes through to the module it wraps)
    own = vars(c)
    own["_modules"] = OrderedDict(m._modules)
    own["_parameters"] = OrderedDict(m._parameters)
    own["_buffers"] = OrderedDict(m._buffers)
    own["_non_persistent_buffers_set"] = set(m._non_persistent_buffers_set)
    for d in _HOOK_DICTS:
        if d in own:
            own[d] = OrderedDict()
    own["training"] = False
    return c


class BatchNormFolding:
    """Keeps a folded twin of ``model`` up to date; :meth:`net` says what to run."""

    def __init__(self, model: nn.Module, keep: list[nn.Module]):
        self.model = model
        self._keep = {id(m) for m in keep}  # never copied (the sites): hooks go on them
        self._built = False  # False: build on the next call
        self._off = False
        self._rebuilds = 0
        # each module the twin copies or replaces, with what it held at the build
        self._watch: list[tuple[nn.Module, tuple]] = []
        self._waiting: list[nn.Module] = []  # hooked modules that keep the twin off
        self._twin: nn.Module | None = None
        self._folded: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # conv, bn, copy
        # per pair, copies of the tensors its fold was last computed from
        self._seen: list[list[torch.Tensor | None]] = []
        #: why the model itself runs although folding is on (None while the twin runs or
        #: when the model has nothing to fold)
        self.off_reason: str | None = None
        self._warned: set[str] = set()

    @property
    def pairs(self) -> int:
        """Pairs folded in the current twin (0 when the model itself runs)."""
        return len(self._folded) if self._twin is not None else 0

    def net(self, x: torch.Tensor) -> nn.Module:
        """The module to run for input ``x`` (in eval mode, gradients enabled): the twin,
        refolded from the live tensors, when it is valid; else the model itself."""
        if self._off:
            return self.model
        if global_hooks():
            return self._stand_aside("a global module hook is registered (it would see the twin)")
        if self._waiting:  # modules the twin would replace carry hooks: wait for them to go
            hooked = [m for m in self._waiting if _hooked(m)]
            if hooked:
                return self._stand_aside(f"a hook is registered on {self._name(hooked[0])}")
            self._waiting, self._built = [], False
        if not self._built or self._stale():
            self._rebuilds += 1
            if self._rebuilds > _MAX_REBUILDS:
                self._off, self._twin = True, None
                return self._stand_aside(
                    f"the model changed {_MAX_REBUILDS} times between calls; folding stays "
                    "off for this explainer (make a new one to fold again)"
                )
            self._build(x)
        if self._twin is None:
            return self._stand_aside(self.off_reason) if self.off_reason else self.model
        self.off_reason = None
        self._refold()
        return self._twin

    def _refold(self) -> None:
        """Fold again every pair whose tensors differ, in full, from those of its last
        fold (a comparison reads what a refold would, and keeps the float64 fold exact)."""
        with torch.no_grad():
            for i, (conv, bn, twin_conv) in enumerate(self._folded):
                live, seen = _sources(conv, bn), self._seen[i]
                if all(map(_equal, live, seen)):
                    continue
                _set_folded(twin_conv, conv, bn)
                self._seen[i] = _copies(live)

    def _stand_aside(self, reason: str) -> nn.Module:
        """Run the model itself; say why, once per reason."""
        self.off_reason = reason
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(
                f"BatchNorm folding is off, the model runs as it is: {reason}",
                FoldingWarning,
                stacklevel=caller_level(),
            )
        return self.model

    def _name(self, m: nn.Module) -> str:
        name = next((n for n, c in self.model.named_modules() if c is m), None)
        return f"{type(m).__name__} {name!r}" if name else type(m).__name__

    def _stale(self) -> bool:
        """A hook on a module the twin copies or replaces, or anything it holds rebound."""
        return any(_hooked(m) or not _same(_snapshot(m), snap) for m, snap in self._watch)

    def _build(self, x: torch.Tensor) -> None:
        self._built, self._twin, self._folded, self._watch = True, None, [], []
        self.off_reason = None
        try:
            self._try_build(x)
        except _ProbeFailed:  # the model failed on this input: its pass will say why
            self._built = False  # and the next call tries again
            self._rebuilds -= 1
        except Exception as e:  # an unusual model: run it as it is
            self._twin, self._folded, self._watch = None, [], []
            self.off_reason = f"building the folded twin failed ({type(e).__name__}: {e})"

    def _try_build(self, x: torch.Tensor) -> None:
        keep = self._keep
        if not any(_foldable_bn(m) for m in self.model.modules()):
            return
        pairs, want = find_pairs(self.model, x, keep)
        if not pairs:
            return
        by_conv = {id(p[0]): p for p in pairs}  # conv -> (conv, bn, folded copy, pad)
        folded_bns = {id(p[1]) for p in pairs}
        memo: dict[int, nn.Module] = {}
        copied: list[nn.Module] = []
        folded: list[tuple[nn.Module, nn.Module, nn.Module]] = []

        def rebuild(m: nn.Module) -> nn.Module:
            if id(m) in memo:
                return memo[id(m)]
            if id(m) in keep:
                new = m
            elif id(m) in folded_bns:
                new = nn.Identity()
                copied.append(m)  # watched: a hook or attribute change rebuilds the twin
            elif id(m) in by_conv:
                _, bn, new, pad = by_conv[id(m)]
                folded.append((m, bn, new))
                copied.extend([m] if pad is None else [m, pad])
            else:
                children = {k: rebuild(c) if c is not None else None for k, c in m._modules.items()}
                if all(children[k] is c for k, c in m._modules.items()):
                    new = m
                else:
                    new = _fresh(m)
                    vars(new)["_modules"] = OrderedDict(children)  # never through a setattr
                    copied.append(m)
            memo[id(m)] = new
            return new

        twin = rebuild(self.model)
        if twin is self.model:
            return
        self._waiting = [m for m in copied if _hooked(m)]
        if self._waiting:  # a user's hook there expects the module itself to run
            self.off_reason = f"a hook is registered on {self._name(self._waiting[0])}"
            return
        with torch.no_grad():
            got = twin(x)
        if not _close(got, want):  # the model reaches a replaced module some other way
            self.off_reason = "the folded twin's logits differ from the model's"
            return
        self._twin, self._folded = twin, folded
        # the probe folded each copy from these very tensors, earlier in this call
        self._seen = [_copies(_sources(conv, bn)) for conv, bn, _ in folded]
        self._watch = [(m, _snapshot(m)) for m in copied]
