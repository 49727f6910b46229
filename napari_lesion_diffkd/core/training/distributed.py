"""Distributed data parallel helpers: ``torchrun --nproc_per_node N lesion-diffkd train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_from_env` starts the
process group (gloo on CPU, nccl on CUDA). Without those variables everything is a no-op and
training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (0, 1, 0 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; returns (info, device).

    On CUDA each process takes GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def current() -> DistInfo:
    """The DistInfo of an initialised process group (or the single-process default)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's boolean, on every rank (e.g. "time budget reached")."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_value(value: float, info: DistInfo) -> float:
    """Rank 0's float, on every rank (e.g. the elapsed minutes a time-based LR reads, so
    that every rank steps with the same LR)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def parameters_agree(module: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same parameters (checksum compared across ranks)."""
    if not info.enabled:
        return True
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()
        weighted = torch.stack(
            [(p.detach().double().flatten() * (i + 1)).sum() for i, p in
             enumerate(module.parameters())]
        ).sum()
    mine = torch.stack([total, weighted]).cpu()
    gathered = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)
