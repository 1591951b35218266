"""Model directories that blow up or slip past a rule: a deeply nested config.json, absurd
sizes (refused from an estimated parameter count before anything is built), and one
symlink rule for model.safetensors and the files of a weights index."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import tsprune
from helpers import cli, copy_model, one_line_error, save_tiny_timesfm25
from tsprune.errors import UserError
from tsprune.model import load
from tsprune.sizecheck import estimate_params


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


def test_deeply_nested_config_is_one_line(tiny_dir, tmp_path):
    m = copy_model(tiny_dir, tmp_path / "m")
    (m / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    one_line_error(cli("inspect", m), "config.json", "nested too deeply")
    one_line_error(cli("eval", "--model", m), "--model", "nested too deeply")
    cfg = json.loads((tiny_dir / "config.json").read_text())
    (m / "config.json").write_text(json.dumps(cfg)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line_error(cli("inspect", m), "nested too deeply")


@pytest.mark.parametrize("edit", [
    {"num_hidden_layers": 1_000_000, "intermediate_size": 1_000_000_000},
    {"hidden_size": 10_000_000},
    {"num_hidden_layers": 1e12},
])
def test_absurd_sizes_are_refused_before_building(edit, tiny_dir, tmp_path):
    m = copy_model(tiny_dir, tmp_path / "m")
    cfg = json.loads((m / "config.json").read_text())
    cfg.update(edit)
    (m / "config.json").write_text(json.dumps(cfg))
    t = time.time()
    line = one_line_error(cli("inspect", m), "config.json", "parameters", "memory available")
    assert time.time() - t < 5, "built something first"
    with pytest.raises(UserError, match="memory available"):
        load(m)
    assert "GB" in line


def test_estimate_is_close_for_a_real_config(tiny_dir):
    n, _ = estimate_params(json.loads((tiny_dir / "config.json").read_text()))
    real = load(tiny_dir).num_params()
    assert 0.2 * real < n <= 1.5 * real, (n, real)


@pytest.mark.parametrize("how", ["single", "index"])
def test_one_symlink_rule_for_both_weight_layouts(how, tiny_dir, tmp_path):
    """A weights file linking outside the directory is refused the same way, whether it is
    model.safetensors itself or named by the index; a link inside loads."""
    outside = tmp_path / "elsewhere" / "w.safetensors"
    outside.parent.mkdir()
    outside.write_bytes((tiny_dir / "model.safetensors").read_bytes())
    m = copy_model(tiny_dir, tmp_path / "m")
    (m / "model.safetensors").unlink()
    if how == "single":
        (m / "model.safetensors").symlink_to(outside)
    else:
        (m / "shard.safetensors").symlink_to(outside)
        keys = list(load(tiny_dir).module.state_dict())
        (m / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: "shard.safetensors" for k in keys}}))
    with pytest.raises(UserError, match="not a file inside the model directory.*links to"):
        load(m)
    # the same link, to a file inside the directory, loads
    inner = m / "real.safetensors"
    inner.write_bytes(outside.read_bytes())
    link = m / ("model.safetensors" if how == "single" else "shard.safetensors")
    link.unlink()
    link.symlink_to("real.safetensors")
    assert load(m).num_params() == load(tiny_dir).num_params()


def test_hugging_face_cache_snapshot_links_load(tiny_dir, tmp_path):
    """snapshots/REV/model.safetensors -> ../../blobs/SHA, as huggingface_hub lays them out."""
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in tiny_dir.iterdir():
        (repo / "blobs" / f.name).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("../../blobs") / f.name)
    assert load(snap).num_params() == load(tiny_dir).num_params()


def test_half_precision_sharded_checkpoint_loads_in_float32(tiny_dir, tmp_path):
    """A checkpoint stored in bf16 and sharded (as published ones and the bundled `small`
    are) loads with every weight in float32, equal to the bf16 values, and forecasts as the
    float32 model holding those rounded weights does."""
    from transformers import TimesFm2_5ModelForPrediction

    src = TimesFm2_5ModelForPrediction.from_pretrained(tiny_dir)
    half = tmp_path / "bf16"
    src.to(torch.bfloat16).save_pretrained(half, max_shard_size="100KB")
    assert len(list(half.glob("model-*.safetensors"))) > 1
    m = tsprune.load(half)
    assert {p.dtype for p in m.module.parameters()} == {torch.float32}
    rounded = tsprune.load(tiny_dir)
    for p in rounded.module.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    for (k, a), (_, b) in zip(m.module.state_dict().items(), rounded.module.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(3, 128, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.forecast(x, horizon=24).point, rounded.forecast(x, horizon=24).point)
