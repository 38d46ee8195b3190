"""The PathwayExplorer's parts on their own: the request worker and the caches.

No widget and no model: the worker runs a fake handler, the caches hold plain values.
"""

from __future__ import annotations

import threading

import pytest

from critpath_widgets import Cancelled
from critpath_widgets.widgets.explorer import worker as worker_module
from critpath_widgets.widgets.explorer.caches import ImageStore, LruCache
from critpath_widgets.widgets.explorer.worker import RequestWorker, Superseded

TIMEOUT = 30


class _Recorder:
    """A handler that records requests and blocks on the first until released."""

    def __init__(self, block_first: bool = False):
        self.handled = []
        self.threads = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not block_first:
            self.release.set()

    def __call__(self, req):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        self.handled.append(req.gen)


def _submit(w: RequestWorker, sparsity: float = 0.5, method: str = "neuron_mct"):
    return w.submit(image_id=1, target=None, method=method, scope="global", sparsity=sparsity)


def test_worker_runs_only_the_latest_pending_request():
    rec = _Recorder(block_first=True)
    w = RequestWorker(rec)
    try:
        first = _submit(w, 0.1)
        assert rec.entered.wait(TIMEOUT)
        reqs = [_submit(w, 0.2 + 0.01 * i) for i in range(5)]
        assert w.busy and w.has_pending
        assert w.wait(timeout=0.05) is False
        assert w.is_stale(first) and not w.is_stale(reqs[-1])
        rec.release.set()
        assert w.wait(TIMEOUT)
        assert rec.handled == [first.gen, reqs[-1].gen]  # the 4 in between never ran
        assert not w.busy and w.settled()
        assert all(t.daemon and t is not threading.current_thread() for t in rec.threads)
    finally:
        w.close()


def test_progress_callback_cancels_and_supersedes():
    reports = []
    w = RequestWorker(lambda req: None)
    try:
        req = _submit(w)
        w.wait(TIMEOUT)
        progress = w.progress_callback(req, lambda d, t: reports.append((d, t)))
        progress(1, 4)
        assert reports == [(1, 4)]
        # a newer request for another sparsity reuses the scores: no interruption
        with w.lock:
            _submit(w, 0.9)
            progress(2, 4)
            # one that needs other scores stops the computation
            _submit(w, 0.9, method="random")
            with pytest.raises(Superseded):
                progress(3, 4)
        w.wait(TIMEOUT)
    finally:
        w.close()


def test_path_dependent_progress_is_superseded_by_another_sparsity():
    """Greedy's scores hold for one sparsity: a pending request for another one stops
    the computation, one for the same sparsity does not."""
    w = RequestWorker(lambda req: None)
    try:
        req = _submit(w, 0.5, method="greedy")
        w.wait(TIMEOUT)
        progress = w.progress_callback(req, lambda d, t: None, sparsity_matters=True)
        with w.lock:
            _submit(w, 0.5, method="greedy")
            progress(1, 4)
            _submit(w, 0.9, method="greedy")
            with pytest.raises(Superseded):
                progress(2, 4)
        w.wait(TIMEOUT)
    finally:
        w.close()


def test_cancel_stops_the_running_request_only():
    rec = _Recorder(block_first=True)
    w = RequestWorker(rec)
    try:
        req = _submit(w)
        assert rec.entered.wait(TIMEOUT)
        progress = w.progress_callback(req, lambda d, t: None)
        assert w.cancel() is True
        with pytest.raises(Cancelled):
            progress(1, 4)
        rec.release.set()
        w.wait(TIMEOUT)
        assert w.cancel() is False  # nothing left to cancel
        later = _submit(w)
        w.progress_callback(later, lambda d, t: None)(1, 4)  # a newer request runs
        w.wait(TIMEOUT)
    finally:
        w.close()


def test_idle_worker_thread_exits_and_restarts(monkeypatch):
    monkeypatch.setattr(worker_module, "WORKER_IDLE_EXIT_S", 0.2)
    rec = _Recorder()
    w = RequestWorker(rec)
    try:
        _submit(w)
        w.wait(TIMEOUT)
        first = w.thread
        first.join(10)
        assert not first.is_alive() and w.thread is None
        _submit(w, 0.4)
        w.wait(TIMEOUT)
        assert w.thread is not None and w.thread is not first
        assert rec.threads == [first, w.thread]
    finally:
        w.close()


def test_close_stops_the_thread_and_refuses_requests():
    w = RequestWorker(lambda req: None)
    _submit(w)
    w.wait(TIMEOUT)
    thread = w.thread
    w.close()
    thread.join(10)
    assert not thread.is_alive()
    assert _submit(w) is None


def test_lru_cache_evicts_least_recently_used_and_drops_images():
    c = LruCache(3)
    for key in [(1, "a"), (1, "b"), (2, "a")]:
        c.put(key, key[1])
    assert c.get((1, "a")) == "a"  # now the most recently used
    c.put((3, "a"), "x")
    assert (1, "b") not in c and len(c) == 3
    c.drop_image(1)
    assert (1, "a") not in c and (2, "a") in c and (3, "a") in c
    assert c.get((9, "z")) is None


def test_image_store_keeps_current_good_and_shown():
    store = ImageStore()
    entries = [store.add(object()) for _ in range(5)]
    store.good, store.shown = entries[0].id, entries[1].id
    evicted = store.trim(limit=3)
    assert evicted == [entries[2].id, entries[3].id]
    assert set(store.entries) == {entries[0].id, entries[1].id, entries[4].id}
    # a picture that fails to load falls back on the last good one
    assert store.current == entries[4].id
    assert store.fail(entries[4]) is entries[0]
    assert store.current == entries[0].id and entries[4].failed
