"""Data-parallel training on torch.distributed (launched with ``torchrun``; gloo on CPU,
nccl on GPUs). One process = one rank; a single process needs no setup at all."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment (``(0, 1)`` when not launched)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: torch.device) -> tuple[int, int]:
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, size


def local_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for multi-GPU runs, else ``device`` unchanged."""
    if device.type == "cuda" and world()[1] > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the parameters that currently require grad (re-wrap after freezing)."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to all ranks."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def parameters_in_sync(model: torch.nn.Module) -> bool:
    """True when every rank holds bit-identical parameters (digest compared across ranks).

    BatchNorm buffers are not compared: DDP broadcasts rank 0's buffers at each forward, so
    after the last step they differ by that step's local update; rank 0's are the ones saved.
    """
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    if not dist.is_initialized():
        return True
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    return len(set(digests)) == 1
