"""What the panels that compute in one background thread share: whether it runs, and
waiting for it (the thread is ``self._thread``, replaced by each new run), and stopping
every run when the interpreter exits."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref

log = logging.getLogger(__name__)

_STARTED: weakref.WeakSet[BackgroundRun] = weakref.WeakSet()
"""Every panel that started a run and is not yet collected (see :func:`stop_all`)."""

EXIT_JOIN_S = 5.0
"""How long interpreter exit waits for cancelled runs (they stop at their next step)."""


class _ThreadSlot:
    """The ``_thread`` attribute: assigning a thread records the panel in ``_STARTED``."""

    def __get__(self, panel: object, owner: type | None = None) -> threading.Thread | None:
        return None if panel is None else panel.__dict__.get("_background_thread")

    def __set__(self, panel: object, thread: threading.Thread | None) -> None:
        panel.__dict__["_background_thread"] = thread
        if thread is not None:
            _STARTED.add(panel)  # type: ignore[arg-type]


class BackgroundRun:
    """Mixin: :attr:`busy` and :meth:`wait` over the panel's ``_thread``; the panel's
    ``close()`` must cancel its run (it is what interpreter exit calls)."""

    _thread = _ThreadSlot()

    @property
    def busy(self) -> bool:
        """Whether a run is computing."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends; ``False`` if ``timeout`` seconds passed first."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


@atexit.register
def stop_all(timeout: float = EXIT_JOIN_S) -> None:
    """Close every panel whose run still computes and wait briefly for its thread: a
    daemon thread inside torch while the interpreter tears down aborts the process
    ("terminate called without an active exception" when a kernel shuts down)."""
    deadline = time.monotonic() + timeout
    running = [p for p in list(_STARTED) if p.busy]
    for panel in running:
        try:
            panel.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - exiting anyway; the join below still helps
            log.debug("closing a background panel at exit failed", exc_info=True)
    for panel in running:
        thread = panel._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
