"""The explorer's request worker: one daemon thread runs the latest request, one at a time.

Invariants the explorer relies on:

* every :meth:`RequestWorker.submit` makes a :class:`Request` with a new, larger
  generation number; only the latest *pending* request runs next (a request submitted
  while another runs replaces the pending one), so a burst of slider moves costs one
  computation after the running one;
* a request is *stale* once a newer one was submitted (or the worker closed): the
  handler checks :meth:`RequestWorker.is_stale` before showing anything, so an old
  result is dropped, never shown;
* :meth:`RequestWorker.wait` returns once no request is pending or running and the
  latest generation has been handled;
* the progress callback of a request raises :class:`Cancelled` after :meth:`cancel`
  (or close), and :class:`Superseded` when the pending request needs other scores
  (another image, target, method or scope; a new sparsity alone reuses the scores,
  except for a path-dependent method such as greedy, whose scores depend on it);
* the thread exits after :data:`WORKER_IDLE_EXIT_S` idle seconds (so an unused
  explorer can be collected) and a new one starts with the next request.

All state is guarded by :attr:`RequestWorker.lock`, a re-entrant lock the explorer
also uses for its own shared state.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import Cancelled

log = logging.getLogger(__name__)

#: The worker thread exits after this many idle seconds (restarted on the next request).
WORKER_IDLE_EXIT_S = 60.0
#: The heap is trimmed once the worker has been idle this long after a request: not
#: between the requests of a slider drag, whose allocations would page-fault afresh
#: (trimming after every request made a sparsity change ~40 ms slower on the default model)
TRIM_AFTER_IDLE_S = 1.0
#: Name of the worker thread (shown in debuggers and thread dumps).
THREAD_NAME = "critpath-explorer-worker"

ProgressFn = Callable[[int, int], None]

_libc: ctypes.CDLL | None | bool = None  # loaded on first use; False: no malloc_trim here


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    A computation frees its activations and gradients, but glibc keeps the freed pages
    of its arenas mapped, so the kernel's RSS stays at the computation's peak (on the
    default model about +850 MB after integrated gradients; benchmarks/
    bench_explorer_memory.py). Trimming costs about 8 ms and frees only pages nothing
    uses; returns whether it ran (False off glibc)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    if _libc is False:
        return False
    _libc.malloc_trim(0)
    return True


class Superseded(Cancelled):
    """A long computation was stopped because a newer request needs other scores."""


@dataclass
class Request:
    """One state of the explorer's inputs to compute and show."""

    gen: int
    image_id: int
    target: int | None  # None: the predicted class
    method: str
    scope: str
    sparsity: float
    #: ``{"drop": {...}, "keep": {...}}`` by site name (empty: the plain pathway), and
    #: the network they apply to ("pathway" or "full"); they never change the scores
    interventions: dict = field(default_factory=dict)
    network: str = "pathway"

    def scoring(self) -> tuple:
        """What the scores depend on: requests with equal scorings share them."""
        return (self.image_id, self.target, self.method, self.scope)


class RequestWorker:
    """Runs ``handle(request)`` in one daemon thread for the latest submitted request."""

    def __init__(self, handle: Callable[[Request], None]) -> None:
        self._handle = handle
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._gen = 0
        self._done_gen = 0
        self._cancel_gen = 0
        self._pending: Request | None = None
        self._running: Request | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        #: a request ran since the last heap trim
        self._untrimmed = False
        _LIVE.add(self)

    # ---------------------------------------------------------------- submitting
    def submit(
        self,
        image_id: int,
        target: int | None,
        method: str,
        scope: str,
        sparsity: float,
        interventions: dict | None = None,
        network: str = "pathway",
    ) -> Request | None:
        """Make the latest request (replacing a pending one) and wake or start the thread."""
        with self._cond:
            if self._closed:
                return None
            self._gen += 1
            req = Request(
                self._gen, image_id, target, method, scope, sparsity, interventions or {}, network
            )
            self._pending = req
            self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            return req

    def redirect_pending(self, old_image_id: int, new_image_id: int) -> None:
        """Point a pending request for a picture that failed to load at another one."""
        with self._cond:
            if self._pending is not None and self._pending.image_id == old_image_id:
                self._pending.image_id = new_image_id

    # ------------------------------------------------------------------- queries
    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread, ``None`` while none runs (before the first request, idle)."""
        return self._thread

    @property
    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        with self._cond:
            return self._running is not None or self._pending is not None

    @property
    def has_pending(self) -> bool:
        """Whether a newer request waits behind the running one."""
        with self._cond:
            return self._pending is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no request runs any more)."""
        return self._closed

    def is_stale(self, req: Request) -> bool:
        """Whether a newer request was submitted since ``req`` (or the worker closed)."""
        return req.gen != self._gen or self._closed

    def settled(self) -> bool:
        """Whether the latest request has been handled and nothing waits."""
        return self._pending is None and self._running is None and self._done_gen >= self._gen

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`settled`; ``False`` if ``timeout`` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(self.settled, timeout)

    # ------------------------------------------------------------ cancel / close
    def cancel(self) -> bool:
        """Cancel the running and pending requests; ``False`` if there was none."""
        with self._cond:
            if self._running is None and self._pending is None:
                return False
            self._cancel_gen = self._gen
            return True

    def close(self) -> None:
        """Drop the pending request, cancel the running one and let the thread exit."""
        with self._cond:
            self._closed = True
            self._cancel_gen = self._gen
            self._pending = None
            self._cond.notify_all()

    def progress_callback(
        self, req: Request, report: ProgressFn, sparsity_matters: bool = False
    ) -> ProgressFn:
        """A ``progress(done, total)`` for ``req`` that calls ``report`` and raises
        :class:`Cancelled` / :class:`Superseded` when the computation must stop.

        ``sparsity_matters``: the scores being computed hold only for ``req``'s sparsity
        (a path-dependent method), so a pending request for another one supersedes too.
        """

        def progress(done: int, total: int) -> None:
            if req.gen <= self._cancel_gen or self._closed:
                raise Cancelled("cancelled by the user")
            with self._cond:
                pending = self._pending
            if pending is not None and (
                pending.scoring() != req.scoring()
                or (sparsity_matters and pending.sparsity != req.sparsity)
            ):
                raise Superseded("superseded by a newer request")
            report(done, total)

        return progress

    # ------------------------------------------------------------------- thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while self._pending is None and not self._closed:
                    idle = time.monotonic() - idle_since
                    left = WORKER_IDLE_EXIT_S - idle
                    if left <= 0:
                        # idle: let the thread go (and the explorer be collected)
                        self._thread = None
                        return
                    if self._untrimmed and idle >= TRIM_AFTER_IDLE_S:
                        # the result is on show and no request came: give the
                        # computation's pages back (under the lock: ~8 ms)
                        self._untrimmed = False
                        trim_heap()
                        continue
                    self._cond.wait(min(left, TRIM_AFTER_IDLE_S) if self._untrimmed else left)
                if self._closed:
                    self._running = None
                    self._cond.notify_all()
                    return
                req = self._pending
                self._pending = None
                self._running = req
            try:
                self._handle(req)
            except BaseException:  # noqa: BLE001 - never let the worker die
                log.exception("PathwayExplorer worker: unexpected failure")
            finally:
                with self._cond:
                    self._untrimmed = True
                    self._running = None
                    self._done_gen = max(self._done_gen, req.gen)
                    self._cond.notify_all()


_LIVE: weakref.WeakSet[RequestWorker] = weakref.WeakSet()
"""Every worker not yet collected, for :func:`close_all` at interpreter exit."""

EXIT_JOIN_S = 5.0
"""How long interpreter exit waits for cancelled workers (a torch pass ends in ~0.1 s)."""


@atexit.register
def close_all(timeout: float = EXIT_JOIN_S) -> None:
    """Cancel every worker and wait briefly for its thread: a daemon thread still inside
    a torch call while the interpreter tears down aborts the process ("terminate called
    without an active exception" when a kernel shuts down)."""
    deadline = time.monotonic() + timeout
    workers = list(_LIVE)
    for worker in workers:
        worker.close()
    for worker in workers:
        thread = worker.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


__all__ = ["Request", "RequestWorker", "Superseded", "WORKER_IDLE_EXIT_S", "trim_heap"]
