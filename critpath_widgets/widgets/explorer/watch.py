"""Whether the explorer's model changed since its results were computed.

The explorer caches explanations, gradient maps, baseline maps and each picture's
predicted classes. A user who edits the model's weights (``load_state_dict``, an
optimiser step, ``.data`` writes) or swaps a submodule must never see a result of a
model state that no longer exists. :class:`ModelWatch` compares, before every request,
the model's modules (by identity) and its parameters and buffers (identity, and values
in full against copies taken when the results were made): exact, no version counters.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Seconds between two looks of the :class:`ModelPoller` at an idle explorer's model.
POLL_INTERVAL_S = 2.0


class ModelWatch:
    """Remembers the model's modules and tensors; :meth:`changed` says whether they
    differ now (and remembers the new state)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # the poller thread compares while the worker may take a new snapshot
        self._lock = threading.Lock()
        self._take()

    def _take(self) -> None:
        """The state to compare with: modules and tensors by reference, values copied."""
        self._modules = list(self.model.named_modules())
        named = itertools.chain(self.model.named_parameters(), self.model.named_buffers())
        self._tensors = [(n, t, t.detach().clone()) for n, t in named]

    def differs(self) -> bool:
        """Whether a module, parameter or buffer was replaced, or a value changed, since
        the last snapshot (which stays the one to compare with)."""
        with self._lock, torch.no_grad():
            modules = list(self.model.named_modules())
            same = len(modules) == len(self._modules) and all(
                a == c and b is d for (a, b), (c, d) in zip(modules, self._modules, strict=True)
            )
            if same:
                named = list(
                    itertools.chain(self.model.named_parameters(), self.model.named_buffers())
                )
                same = len(named) == len(self._tensors) and all(
                    n == m and t is u and t.shape == copy.shape and torch.equal(t, copy)
                    for (n, t), (m, u, copy) in zip(named, self._tensors, strict=True)
                )
        return not same

    def changed(self) -> bool:
        """Whether the model differs from the last snapshot; the state seen now becomes
        the one to compare with."""
        if not self.differs():
            return False
        with self._lock:
            self._take()
        return True


class ModelPoller:
    """A daemon thread that calls ``owner.<method>()`` every ``interval`` seconds, so
    that an idle explorer notices a model edited from another cell.

    It holds the owner weakly (an explorer nobody references can be collected, and the
    thread then ends) and stops on :meth:`stop`.
    """

    def __init__(self, owner: object, method: str, interval: float = POLL_INTERVAL_S) -> None:
        self._ref = weakref.ref(owner)
        self._method = method
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="critpath-model-poller", daemon=True)
        self._thread.start()
        _POLLERS.add(self)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            owner = self._ref()
            if owner is None:
                return
            look: Callable[[], None] = getattr(owner, self._method)
            try:
                look()
            except Exception:  # noqa: BLE001 - a failed look must not end the polling
                log.debug("model poll failed", exc_info=True)
            del owner, look

    def stop(self) -> None:
        """End the thread (at its next wake-up; it never touches the owner after this)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()


_POLLERS: weakref.WeakSet[ModelPoller] = weakref.WeakSet()
"""Every poller not yet collected, stopped at interpreter exit."""


@atexit.register
def stop_all(timeout: float = 2.0) -> None:
    """Stop every poller and wait briefly for a look in progress (it reads the model's
    tensors; a daemon thread inside torch while the interpreter tears down aborts it)."""
    deadline = time.monotonic() + timeout
    pollers = list(_POLLERS)
    for poller in pollers:
        poller.stop()
    for poller in pollers:
        poller._thread.join(max(0.0, deadline - time.monotonic()))
