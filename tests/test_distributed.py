"""Two processes with the gloo backend on CPU (torch.distributed, as under torchrun): the
all-reduced importance gives every rank the single-process plan, and DDP fine-tuning
reaches the single-process weights."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from helpers import tiny_task


def _setup():
    return tiny_task(1200, 256)


def _cfgs():
    from tsprune.prune import PruneConfig
    from tsprune.train import FinetuneConfig
    return (PruneConfig(ratio=0.3, batch_size=32, min_steps=4, val_samples=None),
            # one epoch, validated at its end: the DDP gradients are compared, not early-stopping
            # choices between near-equal validation figures
            FinetuneConfig(lr=(1e-3,), epochs=1, val_every=0, batch_size=32, val_samples=None))


def _worker(rank, world, port, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from tsprune.prune import apply, score
        from tsprune.train import finetune
        m, train, val = _setup()
        pc, fc = _cfgs()
        plan = score(m, train, val, pc, show_progress=False)
        pruned = apply(m, plan)
        finetune(pruned, train, val, fc, show_progress=False)
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"masks": plan.masks, "history": plan.history,
                           "weights": {k: v.flatten()[:64].tolist()
                                       for k, v in pruned.module.state_dict().items()}}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_match_one(tmp_path):
    from tsprune.prune import apply, score
    from tsprune.train import finetune
    torch.set_num_threads(1)
    m, train, val = _setup()
    pc, fc = _cfgs()
    plan = score(m, train, val, pc, show_progress=False)
    pruned = apply(m, plan)
    finetune(pruned, train, val, fc, show_progress=False)
    out = tmp_path / "rank0.json"
    os.environ.pop("WORLD_SIZE", None)
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    got = json.loads(out.read_text())
    assert got["masks"] == plan.masks
    vl = [h["val_loss"] for h in got["history"] if "val_loss" in h]
    assert vl == pytest.approx([h["val_loss"] for h in plan.history if "val_loss" in h], rel=1e-5)
    for k, v in pruned.module.state_dict().items():
        assert torch.allclose(torch.tensor(got["weights"][k]), v.flatten()[:64], rtol=1e-3, atol=1e-5), k
