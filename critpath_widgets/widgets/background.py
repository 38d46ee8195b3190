"""What the panels that compute in one background thread share: whether it runs, and
waiting for it (the thread is ``self._thread``, replaced by each new run)."""

from __future__ import annotations

import threading


class BackgroundRun:
    """Mixin: :attr:`busy` and :meth:`wait` over the panel's ``_thread``."""

    _thread: threading.Thread | None = None

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
