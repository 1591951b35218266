"""Model-level scoring: one importance step (forward + backward + score/EMA update of every
mask) on a TimesFM 2.5 model, side by side:

- paper-style reference: masked Linears with per-sample mask leaves through autograd;
- fused: forward/backward hooks and tsprune.ops.fused_importance (cpp on CPU), and the same
  hooks with the torch reference kernel;
- the importance arithmetic alone, given the captured activations and gradients of every
  masked Linear: eager torch (the paper's per-sample g, then the score) vs the fused kernel;
- peer: one scoring pass of Torch-Pruning's TaylorImportance on the same model.

The model is the bundled checkpoint when present, else a random one of the same shape.
Run: python -m pytest bench/bench_scoring.py -q -s
"""
from __future__ import annotations

import pytest
import torch

from tsprune import ops
from tsprune.model import bundled_path, from_config, load
from tsprune.prune.engine import Importance, _score_batch
from tsprune.prune.masks import MaskSet, attach

B, L = 32, 512
NANO_LIKE = dict(model_type="timesfm2_5", patch_length=32, context_length=512, horizon_length=128,
                 num_hidden_layers=4, hidden_size=256, intermediate_size=1024, head_dim=64,
                 num_attention_heads=4, num_key_value_heads=4, output_quantile_len=32,
                 use_continuous_quantile_head=False, force_flip_invariance=False,
                 infer_is_positive=False)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    m = load("nano") if bundled_path("nano") else from_config(NANO_LIKE)
    for p in m.module.parameters():
        p.requires_grad_(False)
    masks = MaskSet(m.module, m.family.structure(m.module).linears())
    g = torch.Generator().manual_seed(0)
    t = torch.arange(L + 96, dtype=torch.float32)
    x = torch.randn(B, L + 96, generator=g).cumsum(1) * 0.1 + torch.sin(2 * torch.pi * t / 24)
    return m, masks, x[:, :L].contiguous(), x[:, L:].contiguous()


GROUP = f"scoring step, TimesFM 2.5, batch {B}, context {L}"


@pytest.mark.parametrize("impl", ["paper-style reference", "fused cpp", "fused torch-reference kernel"])
def test_scoring_step(measure, setup, impl, monkeypatch):
    m, masks, c, t = setup
    if impl == "fused cpp" and "cpp" not in ops.available_backends("cpu"):
        pytest.skip("tsprune._C is not built")
    if impl == "fused torch-reference kernel":
        monkeypatch.setenv("TSPRUNE_BACKEND", "reference")
    scorer = "reference" if impl.startswith("paper") else "fused"
    imp = Importance(masks, 0.5)
    fn = lambda: _score_batch(m, masks, imp, c, t, scorer)  # noqa: E731
    fn()
    measure(fn, group=GROUP, name=impl, work=B, unit="samples",
            baseline=impl == "paper-style reference", rounds=5)


@pytest.fixture(scope="module")
def captured(setup):
    """(x, G) at every masked point of one backward pass."""
    m, masks, c, t = setup
    pairs = []
    with attach(m.module, masks, "fused", on_grad=lambda p, s, x, g: pairs.append((x, g))):
        cc = c.clone().requires_grad_(True)
        m.family.loss(m.module, cc, t).backward()
    return pairs


def _paper_importance(pairs, imps):
    for (x, g), imp in zip(pairs, imps):
        gb = (x.float() * g.float()).reshape(x.shape[0], -1, x.shape[-1]).sum(1)  # (B, d) per sample
        s = (-gb + gb * gb / 2).sum(0)
        imp.mul_(0.5).add_(s, alpha=0.5)
        imp.abs()


@pytest.mark.parametrize("impl", ["torch eager", "fused cpp"])
def test_importance_arithmetic(measure, captured, impl):
    if impl == "fused cpp" and "cpp" not in ops.available_backends("cpu"):
        pytest.skip("tsprune._C is not built")
    imps = [torch.zeros(x.shape[-1]) for x, _ in captured]
    if impl == "torch eager":
        fn = lambda: _paper_importance(captured, imps)  # noqa: E731
    else:
        def fn():
            for (x, g), imp in zip(captured, imps):
                ops.fused_importance(x, g, imp, alpha=0.5, first=False, backend="cpp")
    fn()
    measure(fn, group=f"importance arithmetic only, {len(captured)} masks, batch {B}", name=impl,
            work=B, unit="samples", baseline=impl == "torch eager", rounds=10)


def test_peer_torch_pruning_taylor(bench_report, setup):
    """One scoring pass of Torch-Pruning's TaylorImportance (parameter gradients, every
    prunable group of the model) on the same model and batch, as a peer figure."""
    tp = pytest.importorskip("torch_pruning", reason="torch-pruning is not installed (pip install torch-pruning)")
    import time
    m, _, c, t = setup
    module = m.module

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return m.family.forecast(self.inner, x, 96).point

    w = Wrapper(module)
    for p in module.parameters():
        p.requires_grad_(True)
    try:
        dg = tp.DependencyGraph().build_dependency(w, example_inputs=c[:2])
    except Exception as e:  # noqa: BLE001 - the peer may not trace this architecture
        pytest.skip(f"Torch-Pruning cannot trace TimesFM 2.5: {type(e).__name__}: {str(e)[:120]}")
    imp = tp.importance.TaylorImportance()
    groups = list(dg.get_all_groups(root_module_types=[torch.nn.Linear]))

    def one_pass():
        module.zero_grad(set_to_none=True)
        m.family.loss(module, c, t).backward()
        for grp in groups:
            imp(grp)
    one_pass()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
    for p in module.parameters():
        p.requires_grad_(False)
    times.sort()
    bench_report.add(GROUP, f"peer: Torch-Pruning TaylorImportance ({len(groups)} groups)",
                     times[1], work=B, unit="samples", min_seconds=times[0])
