"""NeuronIntGrad: integrated gradients of every neuron, one site at a time.

A site's score is |a * mean over alpha in {0, 1/m, ..., 1} of dy/d(alpha a)|: the rest
of the network runs on a batch of alpha-scaled copies of the site's output. Three
layouts make that cheaper than the plain batched pass, each used only once verified on
this model against the plain pass (once per explainer and net, :meth:`NeuronIntGrad.reset`):

* *broadcast* (one image): the layers before the site run at batch 1 and the site
  output turns into the batch of alphas, which later layers broadcast against; a
  convolution or linear layer that reads it runs once at batch 1 (:mod:`..affine`);
* *replay*: the module calls that end before the site are not computed at all, their
  outputs come from one cached forward pass (:mod:`..replay`);
* both at once, for one image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from ...errors import ModelError
from .. import memory, passes
from ..affine import AffineShortcut, alpha_batch, sum_rows
from ..replay import PrefixReplay
from ..validate import check_positive_int
from .base import Job, Scorer

#: the attributes that say whether a layout was verified on the net that runs
_BROADCAST_REPLAY, _BROADCAST, _REPLAY = "broadcast_replay_ok", "broadcast_ok", "replay_ok"


class NeuronIntGrad(Scorer):
    """Integrated gradients per neuron; ``steps`` alphas, ``batch_size`` rows a pass."""

    description = "integrated gradients of every neuron over `steps` alphas, site by site"
    options = {"steps": 10, "batch_size": 32}
    keeps_grads = True  # alpha = 1 reuses the score pass's gradient

    def __init__(self) -> None:
        #: per layout, whether it was verified on the net that runs (None: not yet tried)
        self.broadcast_replay_ok: bool | None = None
        self.broadcast_ok: bool | None = None
        self.replay_ok: bool | None = None

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """``steps`` and ``batch_size`` are positive integers."""
        check_positive_int(opts, "steps", "batch_size")

    def reset(self) -> None:
        """Every layout is verified again on the net that runs now."""
        self.broadcast_ok = self.replay_ok = self.broadcast_replay_ok = None

    def score(self, job: Job) -> torch.Tensor:
        """|a * mean over alphas of dy/d(alpha a)| of every site, last site first (the
        one-time checks of the layouts then run where they are cheapest: the shortest
        suffix)."""
        st, x, first = job.st, job.x, job.first
        assert first.acts is not None and first.grads is not None and st.hooks is not None
        hooks = st.hooks
        steps = int(job.opts["steps"])
        alphas = torch.arange(steps, dtype=x.dtype, device=x.device) / steps  # 0 .. (m-1)/m
        n = x.shape[0]
        flat = memory.empty((n, first.layout.total), x.dtype, x.device)
        out_views = first.layout.views(flat)
        total = len(first.acts)
        with contextlib.ExitStack() as stack:
            replay = None
            if self.replay_ok is not False or (n == 1 and self.broadcast_replay_ok is not False):
                replay = stack.enter_context(PrefixReplay(st.net, lambda: hooks.count))
                with torch.no_grad(), replay.recording():
                    passes.run(st, x, lambda i, name, out: None)
            shortcut = None
            if n == 1:
                # the hooks that keep module paths for functional sites see no tensor
                ours = (replay.hook_ids if replay is not None else set()) | hooks.path_ids
                shortcut = stack.enter_context(AffineShortcut(st.net, ours))
            for done, i in enumerate(reversed(range(total)), start=1):
                gsum = self._alpha_grad_sum(job, i, alphas, replay, shortcut)
                gsum += first.grads[i]
                torch.mul(first.acts[i], gsum, out=out_views[i])
                if job.progress is not None:
                    job.progress(done, total)
        flat.abs_().div_(steps + 1)
        return flat

    def _alpha_grad_sum(
        self,
        job: Job,
        site: int,
        alphas: torch.Tensor,
        replay: PrefixReplay | None,
        shortcut: AffineShortcut | None,
    ) -> torch.Tensor:
        """Sum over alphas of dy/dz at z = alpha * a_site, shaped like the site output,
        by the cheapest layout this model supports, else the plain batched pass. A layout
        is checked once against the plain pass on two alphas (enough to catch a layout
        the model does not support, at a fraction of the cost of all of them)."""

        def attempt(flag: str, **kw: Any) -> torch.Tensor | None:
            try:
                if getattr(self, flag) is None:
                    probe = alphas[[0, -1]] if alphas.numel() > 2 else alphas
                    g = _alpha_grads(job, site, probe, **kw)
                    ref = _alpha_grads(job, site, probe)
                    tol = 1e-6 * float(ref.abs().max()) + 1e-12
                    setattr(self, flag, bool(torch.allclose(g, ref, rtol=1e-4, atol=tol)))
                    if not getattr(self, flag):
                        return None
                return _alpha_grads(job, site, alphas, **kw)
            except (ModelError, RuntimeError):
                setattr(self, flag, False)
                return None

        layouts: list[tuple[str, dict[str, Any]]] = []
        if job.x.shape[0] == 1:
            if replay is not None:
                kw = {"broadcast": True, "replay": replay, "shortcut": shortcut}
                layouts.append((_BROADCAST_REPLAY, kw))
            layouts.append((_BROADCAST, {"broadcast": True, "shortcut": shortcut}))
        if replay is not None:
            layouts.append((_REPLAY, {"replay": replay}))
        for flag, kw in layouts:
            if getattr(self, flag) is not False:
                g = attempt(flag, **kw)
                if g is not None:
                    return g
        return _alpha_grads(job, site, alphas)


def _alpha_grads(
    job: Job,
    site: int,
    alphas: torch.Tensor,
    broadcast: bool = False,
    replay: PrefixReplay | None = None,
    shortcut: AffineShortcut | None = None,
) -> torch.Tensor:
    """Sum over alphas of dy/dz at z = alpha * a_site, per sample.

    Every (sample, alpha) pair is a row of a batched pass of ``batch_size`` rows at
    most. The layers before the site run without recording a graph (only the suffix is
    differentiated); with ``broadcast`` (one image) they even run at batch 1, and the
    site output turns into the batch of alphas, which later layers broadcast against;
    with ``replay`` the calls that end before the site are not computed at all; with
    ``shortcut`` (broadcast only) linear layers that read the alpha batch run at batch 1
    (:mod:`..affine`).
    """
    st, x, tgt = job.st, job.x, job.first.target
    chunk = int(job.opts["batch_size"])
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
            ret = z.clone() if st.protect else z
            if shortcut is not None:
                shortcut.arm(ret, out, al)
            return ret

        rows = si[:1] if broadcast else si
        replaying = replay.replaying(site, rows) if replay else contextlib.nullcontext()
        with torch.no_grad(), replaying:
            logits = passes.run(st, x[:1] if broadcast else x[si], scale, batch=len(si))
        y = logits.gather(1, tgt[si][:, None]).sum()
        if shortcut is not None and shortcut.used:
            src = shortcut.source
            g, g_short = passes.grad(y, [zs[0], src], allow_unused=True)
            if g_short is None:
                g_short = torch.zeros_like(src)
            g = g_short if g is None else sum_rows(g).add_(g_short)
        else:
            (g,) = passes.grad(y, zs[0])
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
