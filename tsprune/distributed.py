"""Several processes, one job: `torchrun --nproc-per-node N -m tsprune.cli prune ...`.

torch.distributed does the work (DistributedDataParallel for fine-tuning, all-reduce of
the importance step scores before ranking); this module only starts the process group
from torchrun's environment and says which rank writes outputs.

Multi-GPU (NCCL), one process per GPU:
    torchrun --nproc-per-node 4 -m tsprune.cli prune --model DIR --data FILE --out X
On CPU the gloo backend is used (tests run 2 processes that way).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "auto") -> torch.device:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); returns the device
    this rank computes on (cuda:LOCAL_RANK with NCCL when GPUs are there, else CPU/gloo)."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if n > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (a decision only rank 0 can make, e.g. a timing)."""
    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return int(t.item())
