"""Large CPU buffers for the engine: huge-page backed and reused once provably free.

A fresh large buffer is paged in 4 KiB at a time on first touch, and for the engine's
per-call buffers (scores, pathway weights, masked activations and their gradients) that
costs more than the work done on them; ``benchmarks/bench_memory.py`` measures it. Here
they are anonymous mappings advised to use 2 MiB pages, each handed out behind a fresh
``memoryview`` *token*: ``torch.frombuffer`` holds a reference to the token for as long
as the tensor's storage (or any view of it) lives, as its documentation states. A
``weakref.finalize`` on the token puts the mapping back on the free list only once the
token is unreachable, so a mapping is never handed out while any tensor can still reach
it. That rests on language guarantees (a finalizer runs only after its object is gone),
not on reference counts: an interpreter that collects later only reuses later.

Free mappings beyond :data:`IDLE_BYTES` are unmapped, oldest first, before a new one is
made; :func:`release` drops them all. No process-wide setting is changed.
"""

from __future__ import annotations

import math
import mmap
import threading
import weakref

import torch

#: buffers at least this large (bytes) come from reused mappings (CPU, Linux)
RECYCLE_BYTES = 1 << 20
#: free mappings kept for reuse, in bytes; the rest are unmapped
IDLE_BYTES = 256 << 20
_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)
_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
# A finalizer may run in a thread that already holds the lock (a tensor dropped inside
# one of these functions): the lock is reentrant.
_lock = threading.RLock()
_free: list[mmap.mmap] = []  # free mappings, oldest first


def empty(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """An uninitialised contiguous tensor; from a reused huge-page mapping when large, on
    the CPU, on Linux, and from ``torch.empty`` otherwise."""
    device = torch.device(device)
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    if device.type != "cpu" or nbytes < RECYCLE_BYTES or not _FLAGS:
        return torch.empty(shape, dtype=dtype, device=device)
    buf = _take(nbytes)
    if buf is None:
        _trim(IDLE_BYTES)  # free ones of other sizes beyond the budget go first
        try:
            buf = mmap.mmap(-1, nbytes, flags=_FLAGS)
        except (OSError, ValueError):
            return torch.empty(shape, dtype=dtype, device=device)
        if _ADVICE is not None:
            try:
                buf.madvise(_ADVICE)
            except OSError:  # no transparent huge pages here: 4 KiB pages then
                pass
    token = memoryview(buf)
    # the mapping returns to the free list only after the token, and so every tensor
    # made from it, is gone
    weakref.finalize(token, _give_back, buf).atexit = False
    flat = torch.frombuffer(token, dtype=dtype, count=numel)
    # a tensor of its own over the mapping's storage, not a view of ``flat``: a custom
    # autograd Function may return it, and the model may then write into it in place
    # (``result += input`` on a site output), which autograd forbids on a view. The
    # storage keeps the token alive, as ``flat`` did.
    return torch.empty(0, dtype=dtype).set_(flat.untyped_storage(), 0, tuple(shape))


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`empty` with the shape and device of ``t`` (and its dtype unless given)."""
    return empty(t.shape, t.dtype if dtype is None else dtype, t.device)


def release() -> int:
    """Unmap every free mapping kept for reuse; returns the bytes released."""
    return _trim(0)


def idle_bytes() -> int:
    """Bytes of free mappings currently kept for reuse."""
    with _lock:
        return sum(len(b) for b in _free)


def _take(nbytes: int) -> mmap.mmap | None:
    """The most recently freed mapping of this size, if any."""
    with _lock:
        for i in range(len(_free) - 1, -1, -1):
            if len(_free[i]) == nbytes:
                return _free.pop(i)
    return None


def _give_back(buf: mmap.mmap) -> None:
    """Finalizer: a mapping that no tensor reaches any more is free for reuse."""
    with _lock:
        _free.append(buf)


def _trim(keep: int) -> int:
    """Drop free mappings, oldest first, until at most ``keep`` bytes are left; returns
    the bytes dropped (each is unmapped when its mapping object goes)."""
    with _lock:
        total = sum(len(b) for b in _free)
        dropped = 0
        while _free and total - dropped > keep:
            dropped += len(_free.pop(0))
    return dropped
