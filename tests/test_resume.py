"""Interrupted scoring and fine-tuning continue from their last checkpoint and end exactly
where an uninterrupted run ends (CPU, same seed)."""
from __future__ import annotations

import pytest
import torch

from helpers import tiny_task
from tsprune.prune import PruneConfig, score
from tsprune.train import FinetuneConfig, finetune


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def setup():
    return tiny_task(1400, 384)


def _interrupt_after(calls: int, fn_owner, name):
    """Make fn_owner.name raise Boom after `calls` calls."""
    orig = getattr(fn_owner, name)
    count = {"n": 0}

    def wrapped(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise Boom()
        return orig(*a, **k)
    return orig, wrapped


def test_scoring_resumes_to_the_same_plan(setup, tmp_path, monkeypatch):
    m, train, val = setup
    cfg = PruneConfig(ratio=0.3, batch_size=32, min_steps=4, max_epochs=2, patience=2)
    ref = score(m, train, val, cfg, show_progress=False)
    import tsprune.prune.engine as eng
    orig, wrapped = _interrupt_after(5, eng, "_prune_step")
    monkeypatch.setattr(eng, "_prune_step", wrapped)
    with pytest.raises(Boom):
        score(m, train, val, cfg, show_progress=False, checkpoint=tmp_path / "ck")
    monkeypatch.setattr(eng, "_prune_step", orig)
    got = score(m, train, val, cfg, show_progress=False, checkpoint=tmp_path / "ck")
    assert got.masks == ref.masks
    assert [h.get("val_loss") for h in got.history] == [h.get("val_loss") for h in ref.history]


@pytest.mark.parametrize("weight_ema", [0.0, 0.9])  # the moving average is checkpointed too
def test_finetune_resumes_to_the_same_weights(setup, tmp_path, monkeypatch, weight_ema):
    m, train, val = setup
    # with the average: full runs only (no probes), so that the stop falls inside one
    cfg = FinetuneConfig(lr=(1e-3, 1e-4), epochs=2, patience=2, batch_size=32, val_samples=None,
                         weight_ema=weight_ema, lr_probe_steps=0 if weight_ema else 50)
    a = m.clone()
    ra = finetune(a, train, val, cfg, show_progress=False)
    b = m.clone()
    calls = {"n": 0}
    orig = torch.optim.Adam.step

    def step(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-epoch of the second learning rate's first epoch
            raise Boom()
        return orig(self, *args, **kw)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(Boom):
        finetune(b, train, val, cfg, show_progress=False, checkpoint=tmp_path / "ft",
                 checkpoint_every_s=0.0)
    monkeypatch.setattr(torch.optim.Adam, "step", orig)
    c = m.clone()
    rc = finetune(c, train, val, cfg, show_progress=False, checkpoint=tmp_path / "ft",
                  checkpoint_every_s=0.0)
    assert rc.lr == ra.lr and rc.trials == ra.trials
    for (k, v), (_, w) in zip(a.module.state_dict().items(), c.module.state_dict().items()):
        assert torch.equal(v, w), k
