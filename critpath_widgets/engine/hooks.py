"""Whether anything other than the engine hooks a module or the model.

The engine's fast paths (a site's input masked in place, its output gated or scaled in
place, a linear layer run once for a batch of alphas, the folded twin) are exact only
when no hook of someone else's sees the tensors they change or the modules they
replace. One question answers that everywhere: :func:`foreign_hooks`, asked for the
kinds of hooks that could tell the difference. Hook ids are unique across all hook
dictionaries, so a set of the engine's own ids says which entries are ours. (A module's
other hook dicts, ``*_with_kwargs`` and ``*_always_called``, only annotate entries of
the ones read here.)
"""

from __future__ import annotations

from collections.abc import Set

from torch import nn

#: kinds of hooks, as (a module's hook dict, the matching global hook dict) pairs
HookKinds = tuple[tuple[str, str], ...]
#: forward hooks: they see a module's output
OUTPUT: HookKinds = (("_forward_hooks", "_global_forward_hooks"),)
#: forward hooks and forward pre-hooks: they see its input or output
FORWARD: HookKinds = (*OUTPUT, ("_forward_pre_hooks", "_global_forward_pre_hooks"))
#: every kind of module hook, backward ones included
ALL: HookKinds = (
    *FORWARD,
    ("_backward_hooks", "_global_backward_hooks"),
    ("_backward_pre_hooks", "_global_backward_pre_hooks"),
)

_NONE: frozenset[int] = frozenset()
_MODULE = nn.modules.module  # holds the global hook dicts (read at every call)


def foreign_hooks(module: nn.Module, ours: Set[int] = _NONE, kinds: HookKinds = ALL) -> bool:
    """Whether anything other than us hooks ``module``: a hook of these kinds on it whose
    id is not in ``ours``, or a global one. (Asked per site call: one loop, no calls.)"""
    for own, everywhere in kinds:
        d = getattr(module, own)
        if getattr(_MODULE, everywhere) or (d and not d.keys() <= ours):
            return True
    return False


def global_hooks(kinds: HookKinds = ALL) -> bool:
    """Whether a global module hook of these kinds is registered (it sees every module):
    :func:`foreign_hooks`' global half."""
    return any(getattr(_MODULE, everywhere) for _, everywhere in kinds)


def own_hooks(module: nn.Module, ours: Set[int] = _NONE, kinds: HookKinds = ALL) -> bool:
    """Whether ``module`` itself holds a hook of these kinds whose id is not in ``ours``:
    :func:`foreign_hooks`' own half (global hooks aside)."""
    for own, _ in kinds:
        d = getattr(module, own)
        if d and not d.keys() <= ours:
            return True
    return False


def foreign_hooks_anywhere(model: nn.Module, ours: Set[int] = _NONE) -> bool:
    """:func:`foreign_hooks` for any module of ``model``, any kind: whether someone else
    could hold a tensor of the pass or see one change."""
    return global_hooks() or any(own_hooks(m, ours) for m in model.modules())
