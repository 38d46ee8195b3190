"""Independent reference implementations for the engine's tests and benchmarks.

They share no code with the engine: instead of hooks they work on a deep copy of the
model whose activation modules are replaced by wrappers (out-of-place), and they use
plain loops and full sorts. Slow and obvious on purpose.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

#: the activation module types the engine records by default (listed here, not imported)
ACTS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.PReLU,
    nn.RReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
)


class _Wrapped(nn.Module):
    """Replaces an activation module in a copy; every call goes through ``ctl``."""

    def __init__(self, act: nn.Module, ctl: _Control):
        super().__init__()
        act = copy.deepcopy(act)
        if hasattr(act, "inplace"):
            act.inplace = False
        self.act = act
        self.ctl = ctl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ctl(self.act(x))


class _Control:
    """Called on every activation's output (in call order): ``fn(i, a)`` decides what
    the network goes on with."""

    def __init__(self) -> None:
        self.fn: Callable[[int, torch.Tensor], torch.Tensor] = lambda i, a: a
        self.count = 0

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        i = self.count
        self.count += 1
        return self.fn(i, a)


def instrumented_copy(model: nn.Module, types=ACTS) -> tuple[nn.Module, _Control]:
    """A deep copy (eval mode) whose activation modules call a controllable function."""
    m = copy.deepcopy(model).eval()
    if isinstance(getattr(m, "ctl", None), _Control):
        return m, m.ctl  # a test model that calls its control after each activation itself
    ctl = _Control()
    wrapped: dict[int, _Wrapped] = {}
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, types):
                if id(child) not in wrapped:
                    wrapped[id(child)] = _Wrapped(child, ctl)
                setattr(parent, name, wrapped[id(child)])
    return m, ctl


def run(m: nn.Module, ctl: _Control, x: torch.Tensor, fn) -> torch.Tensor:
    ctl.fn = fn
    ctl.count = 0
    return m(x)


def mct_scores(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, types=ACTS
) -> list[torch.Tensor]:
    """|a * dy/da| per site via retain_grad on an instrumented copy."""
    m, ctl = instrumented_copy(model, types)
    acts: list[torch.Tensor] = []

    def rec(i, a):
        a.retain_grad()
        acts.append(a)
        return a

    out = run(m, ctl, x.clone().requires_grad_(True), rec)
    out.gather(1, target[:, None]).sum().backward()
    return [(a * a.grad).abs().detach() for a in acts]


def masked_model(
    model: nn.Module, masks: list[torch.Tensor], types=ACTS
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network restricted to a pathway: site i's output multiplied by masks[i]."""
    m, ctl = instrumented_copy(model, types)

    def f(x: torch.Tensor) -> torch.Tensor:
        return run(m, ctl, x, lambda i, a: a * masks[i].to(a.dtype))

    return f


def masked_gradient(model, x, target, masks, types=ACTS) -> torch.Tensor:
    """Autograd's input gradient of the explicitly masked copy."""
    f = masked_model(model, masks, types)
    xg = x.clone().requires_grad_(True)
    f(xg).gather(1, target[:, None]).sum().backward()
    return xg.grad


def plain_gradient(model, x, target) -> torch.Tensor:
    m = copy.deepcopy(model).eval()
    xg = x.clone().requires_grad_(True)
    m(xg).gather(1, target[:, None]).sum().backward()
    return xg.grad


def intgrad_scores_loop(model, x, target, steps: int = 10) -> list[torch.Tensor]:
    """NeuronIntGrad the straightforward way: one full forward/backward per site and alpha."""
    m, ctl = instrumented_copy(model)
    sizes: list[torch.Tensor] = []
    run(m, ctl, x, lambda i, a: sizes.append(a.detach()) or a)
    scores = []
    for site, a_site in enumerate(sizes):
        total = torch.zeros_like(a_site)
        for j in range(steps + 1):
            alpha = j / steps
            holder: list[torch.Tensor] = []

            def scale(i, a, site=site, alpha=alpha, holder=holder):
                if i != site:
                    return a
                z = (alpha * a.detach()).requires_grad_(True)
                holder.append(z)
                return z

            out = run(m, ctl, x, scale)
            (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), holder[0])
            total += g
        scores.append((a_site * total / (steps + 1)).abs())
    return scores


def topk_mask_sort(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep k per row by a full stable sort (ties: lowest index first)."""
    order = torch.sort(-scores, dim=1, stable=True).indices
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


def model_state(model: nn.Module) -> dict:
    """Everything a call must leave unchanged, for bitwise comparison."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "modules": {n: id(m) for n, m in model.named_modules()},
        "hooks": {
            n: tuple(
                tuple(getattr(m, d).keys())
                for d in (
                    "_forward_hooks",
                    "_forward_pre_hooks",
                    "_backward_hooks",
                    "_backward_pre_hooks",
                    "_forward_hooks_with_kwargs",
                    "_forward_hooks_always_called",
                    "_forward_pre_hooks_with_kwargs",
                )
                if hasattr(m, d)
            )
            for n, m in model.named_modules()
        },
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["modules"] == after["modules"]
    for k in ("params", "buffers"):
        assert before[k].keys() == after[k].keys()
        for n in before[k]:
            assert torch.equal(before[k][n], after[k][n]), f"{k} {n} changed"
    for n, g in before["grads"].items():
        g2 = after["grads"][n]
        assert (g is None) == (g2 is None) and (g is None or torch.equal(g, g2)), f"grad {n}"
