"""Which share of the plan this process makes: rank / world size from accelerate or torchrun.

``accelerate launch --num_processes N`` and ``torchrun --nproc_per_node N`` both set
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; the process group is then created through
accelerate's ``PartialState`` (gloo on CPU, NCCL on GPUs) with a long timeout, because ranks
that resume with less work left wait at the final barrier for the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from ..errors import SynaugError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False  # a torch.distributed process group exists (barriers possible)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def setup_distributed(timeout_hours: float = 72.0) -> DistInfo:
    """Detect the launcher and join its process group (no-op for a single process)."""
    world = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        # cpu=True on GPU-less hosts: accelerate then sets up a gloo (MULTI_CPU) group
        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=timeout_hours))
    if not dist.is_initialized():
        raise SynaugError(f"WORLD_SIZE={world} but no process group could be created; "
                          "launch with accelerate launch or torchrun")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, group=True)


def barrier(info: DistInfo) -> None:
    if info.group and info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()

