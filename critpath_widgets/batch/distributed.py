"""Ranks of a torchrun launch: detection, process group, sharding, gathering results.

Outside torchrun (no RANK / WORLD_SIZE in the environment) a run is rank 0 of 1 and no
process group is made. Under torchrun the group uses gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Item i goes to rank i % world_size: every item exactly once, no padding (a
    DistributedSampler would repeat items to even the shards and bias the means)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return list(items[rank::world_size])


def launched() -> bool:
    """Whether torchrun (or another launcher of torch.distributed) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass
class Ranks:
    """Where this process stands in the run: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere); a barrier for all ranks."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    d = torch.device(choice)
    if d.type == "cuda" and d.index is None:
        d = torch.device(f"cuda:{local_rank}")
    return d


@contextlib.contextmanager
def ranks(device: str = "auto", timeout_min: float = 24 * 60) -> Iterator[Ranks]:
    """This process's :class:`Ranks`; under torchrun a process group that is destroyed
    on every way out (a SIGTERM from torchrun, sent when another rank died, included).

    ``timeout_min`` bounds the final gather, where a fast rank waits for the slowest one.
    """
    if not launched():
        yield Ranks(device=_device(device, 0))
        return
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # nccl's object collectives use the current device
    backend = "nccl" if dev.type == "cuda" else "gloo"

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, on_term) if main_thread else None  # main thread only
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    try:
        yield Ranks(rank, world, dev, True)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["Ranks", "launched", "ranks", "shard"]
