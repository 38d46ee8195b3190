"""Batch-norm folding: run the model with each eval-mode BatchNorm folded into the
convolution that feeds it, without touching the user's model.

In eval mode a BatchNorm right after a convolution is a per-channel affine map, so
``bn(conv(x)) == conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)``. Every pass of the engine (score pass, masked pass,
plain gradient) then skips one memory-bound elementwise pass forward and one backward
per BatchNorm: EfficientNet-Lite0's plain gradient takes about 0.8 of its time. A
symmetric zero padding inside a folded convolution (TF-style "same" padding) moves into
the copy's own ``padding`` as well.

:class:`BatchNormFolding` builds a *twin* of the model: the folded convolutions are
shallow copies holding the folded weights, each folded BatchNorm is an ``Identity``, and
the containers on the way to them are shallow copies with their own child dicts.
Every other module (the sites among them) is the user's own object, shared, so hooks,
attributes and parameters are read live. A pair is folded only when one forward pass
shows the convolution's output going to the BatchNorm and nowhere else, and the folded
copy, run on the convolution's input there, gives the BatchNorm's output; the twin's
logits are checked against the model's once per build. The folded weights are
recomputed whenever a tensor they come from changes: its identity, version counter or
storage, or one of up to 256 sampled values (edits through ``.data`` bump no version).
The twin is rebuilt when a copied module's children, plain attributes or hooks change.
Anything unexpected leaves the model itself to run.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter, OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from .graph import edge_counts
from .hooks import global_hooks
from .hooks import own_hooks as _hooked

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
_SIMPLE = frozenset({int, float, bool, str, tuple, type(None)})
_MAX_REBUILDS = 8
_SAMPLE = 256


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


def _snapshot(m: nn.Module) -> tuple[Any, tuple]:
    """A getter of a module's plain attributes (numbers, strings, tuples; not its mode)
    and their values now: a copy made of the module is stale once they differ."""
    keys = [k for k, v in vars(m).items() if k != "training" and type(v) in _SIMPLE]
    get = operator.itemgetter(*keys) if keys else (lambda d: ())
    return get, get(vars(m))


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
    c.padding = (c.padding[0] + top, c.padding[1] + left)
    return True


def _close(got: Any, want: torch.Tensor) -> bool:
    """Equal up to rounding (relative to the largest value)."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
        return False
    tol = 1e-9 if want.dtype == torch.float64 else 1e-4
    scale = float(want.abs().max()) if want.numel() else 0.0
    return float((got - want).abs().max()) <= tol * scale + 1e-12


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded weight and bias, computed in float64 and rounded once to the weight's
    dtype (so as close to the exact fold as that dtype allows)."""
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
    return (w.to(f64) * s.view(shape)).to(w.dtype), b.to(w.dtype)


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
    c._modules = OrderedDict(m._modules)
    c._parameters = OrderedDict(m._parameters)
    c._buffers = OrderedDict(m._buffers)
    c._non_persistent_buffers_set = set(m._non_persistent_buffers_set)
    for d in _HOOK_DICTS:
        if hasattr(m, d):
            setattr(c, d, OrderedDict())
    c.training = False
    return c


class BatchNormFolding:
    """Keeps a folded twin of ``model`` up to date; :meth:`net` says what to run."""

    def __init__(self, model: nn.Module, keep: list[nn.Module]):
        self.model = model
        self._keep = {id(m) for m in keep}  # never copied (the sites): hooks go on them
        self._built = False  # False: build on the next call
        self._off = False
        self._rebuilds = 0
        self._watch: list[tuple[nn.Module, Any, tuple, tuple]] = []
        self._waiting: list[nn.Module] = []  # hooked modules that keep the twin off
        self._twin: nn.Module | None = None
        self._folded: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # conv, bn, copy
        self._values: list | None = None
        # views of up to _SAMPLE values of each floating tensor of the folded pairs, and
        # their values at the last fold: edits through ``.data`` bump no version counter
        self._views: list[torch.Tensor] = []
        self._sample = torch.empty(0)
        self._dicts: list[dict] = []  # the folded pairs' parameter and buffer dicts

    @property
    def pairs(self) -> int:
        """Pairs folded in the current twin (0 when the model itself runs)."""
        return len(self._folded) if self._twin is not None else 0

    def net(self, x: torch.Tensor) -> nn.Module:
        """The module to run for input ``x`` (in eval mode, gradients enabled): the twin
        when it is valid, else the model itself."""
        if self._off or global_hooks():
            return self.model
        if self._waiting:  # modules the twin would replace carry hooks: wait for them to go
            if any(_hooked(m) for m in self._waiting):
                return self.model
            self._waiting, self._built = [], False
        if not self._built or self._stale():
            self._rebuilds += 1
            if self._rebuilds > _MAX_REBUILDS:  # a model that changes itself as it runs
                self._off, self._twin = True, None
                return self.model
            self._build(x)
        if self._twin is None:
            return self.model
        values = self._value_key()
        if values != self._values or not torch.equal(self._sampled(), self._sample):
            self._refold()
            self._values = values
        return self._twin

    def _stale(self) -> bool:
        """A hook on a module the twin replaces, or a changed attribute or child of one."""
        for m, get, snap, children in self._watch:
            if _hooked(m) or tuple(m._modules.values()) != children:
                return True
            try:
                if get(m.__dict__) != snap:
                    return True
            except KeyError:
                return True
        return False

    def _value_key(self) -> list:
        """Identity, version and storage of every tensor of the folded pairs. A train-mode
        forward updates running statistics without bumping their versions, but it bumps
        ``num_batches_tracked``'s, which is among them."""
        return [
            None if t is None else (id(t), t._version, t.data_ptr())
            for d in self._dicts
            for t in d.values()
        ]

    def _refold(self) -> None:
        for conv, bn, twin_conv in self._folded:
            _set_folded(twin_conv, conv, bn)
        self._resample()

    def _sampled(self) -> torch.Tensor:
        return torch.cat(self._views) if self._views else torch.empty(0)

    def _resample(self) -> None:
        self._views = [
            t.detach().view(-1)[:: max(1, t.numel() // _SAMPLE)]
            for d in self._dicts
            for t in d.values()
            if t is not None and t.is_floating_point() and t.is_contiguous() and t.numel()
        ]
        self._sample = self._sampled()

    def _build(self, x: torch.Tensor) -> None:
        self._built, self._twin, self._folded, self._watch = True, None, [], []
        try:
            self._try_build(x)
        except _ProbeFailed:  # the model failed on this input: its pass will say why
            self._built = False  # and the next call tries again
            self._rebuilds -= 1
        except Exception:  # an unusual model: run it as it is
            self._twin, self._folded, self._watch = None, [], []

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
                    new._modules = OrderedDict(children)
                    copied.append(m)
            memo[id(m)] = new
            return new

        twin = rebuild(self.model)
        if twin is self.model:
            return
        self._waiting = [m for m in copied if _hooked(m)]
        if self._waiting:  # a user's hook there expects the module itself to run
            return
        with torch.no_grad():
            got = twin(x)
        if not _close(got, want):
            return  # the model reaches a replaced module some other way: run it as it is
        self._twin, self._folded = twin, folded
        self._watch = [(m, *_snapshot(m), tuple(m._modules.values())) for m in copied]
        self._dicts = [
            d for conv, bn, _ in folded for d in (conv._parameters, bn._parameters, bn._buffers)
        ]
        self._values = self._value_key()
        self._resample()
