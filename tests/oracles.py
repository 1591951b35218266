"""Upstream code and real data from ``../shared`` for the parity and real-weights tests.

Nothing here is copied from ``../shared``: the upstream modules are imported from there at
test time (never vendored), and every helper skips the calling test, with the reason, when
what it needs is absent. ``../shared`` is the folder beside the repository root (where CI
puts it), or ``$TSPRUNE_SHARED``.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """$TSPRUNE_SHARED if set, else ``../shared`` beside the repository root."""
    env = os.environ.get("TSPRUNE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>``; skips the test when it does not exist."""
    p = shared_root().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: these tests need ../shared beside the repository "
                    f"(or $TSPRUNE_SHARED)")
    return p


# ---- real data ------------------------------------------------------------------------------
def ett_contexts(name: str = "ETTh1", context: int = 512, n: int = 6, horizon: int = 96,
                 split: str = "test") -> torch.Tensor:
    """``n`` real context windows (n, context) of the ETT file ``name`` (z-scored with the
    train split's statistics, the ``ett`` split), spread evenly over the split's windows
    (so over channels and time). Skips when ../shared/data lacks the file."""
    from tsprune.data import DataConfig, ett_path, prepare
    path = ett_path(name)
    if path is None:
        pytest.skip(f"{name} not found in ../shared/data (or $TSPRUNE_SHARED)")
    ds = prepare(DataConfig(path, context=context, horizon=horizon)).windows(split)
    ids = torch.linspace(0, len(ds) - 1, n).round().long()
    return ds.gather(ids)[0].float()


# ---- random weights through the published names ------------------------------------------
@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Give every parameter of ``module`` fresh random values of a useful size (norm
    weights near 1, matrices ~ 1/sqrt(fan-in), biases and embeddings ~ 0.1); returns the
    state dict (the published names) so that it can be loaded into the other side."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float32)
        in_norm = any("norm" in part for part in name.split(".")[:-1])
        if in_norm and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * r)
        elif p.dim() >= 2 and not name.endswith("emb.weight") and "mask_encoding" not in name:
            p.copy_(r / p.shape[-1] ** 0.5)
        else:
            p.copy_(0.1 * r)
    return {k: v.clone() for k, v in module.state_dict().items()}


def exchange_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """a's state dict loads into b, and b's into a, with no missing or unexpected keys
    (strict loading raises on either), and the two end up equal."""
    sa = {k: v.clone() for k, v in a.state_dict().items()}
    b.load_state_dict(sa, strict=True)
    sb = b.state_dict()
    assert sa.keys() == sb.keys()
    a.load_state_dict({k: v.clone() for k, v in sb.items()}, strict=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, |b|): the absolute error where the reference is within 1 of 0,
    the relative error where it is larger (fp32 cannot hold a value of 1000 to 1e-5)."""
    a, b = a.detach().double(), b.detach().double()
    return float(((a - b).abs() / b.abs().clamp_min(1.0)).max())


# ---- upstream modules ---------------------------------------------------------------------
def _import_from(folder: Path, module: str):
    """Import ``module`` with ``folder`` on sys.path first (only for the import)."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))


def time_moe_upstream():
    """The Time-MoE repository's ``modeling_time_moe`` module (../shared/reference)."""
    folder = shared_path("reference", "time_moe")
    try:
        return _import_from(folder, "time_moe.models.modeling_time_moe")
    except ImportError as e:  # ../shared is here, so an oracle that cannot load is a failure
        pytest.fail(f"upstream Time-MoE (../shared/reference) does not import: {e}")


def timer_upstream():
    """thuml/timer-base-84m's ``modeling_timer`` module (../shared/reference, the sktime fork)."""
    folder = shared_path("reference", "timer_xl")
    try:
        return _import_from(folder, "timer.modeling_timer")
    except ImportError as e:  # ../shared is here, so an oracle that cannot load is a failure
        pytest.fail(f"upstream Timer-XL (../shared/reference) does not import: {e}")


def _stub_jaxtyping() -> None:
    """jaxtyping is used by uni2ts in annotations only: a stand-in whose ``Float[...]`` etc.
    are plain objects, installed only when jaxtyping itself is not importable."""
    if importlib.util.find_spec("jaxtyping") is not None:
        return

    class _Ann:
        def __class_getitem__(cls, item):
            return cls

    mod = types.ModuleType("jaxtyping")
    for n in ("Bool", "Float", "Int", "Num", "Shaped", "PyTree", "Array"):
        setattr(mod, n, type(n, (_Ann,), {}))
    sys.modules["jaxtyping"] = mod


def _stub_hydra() -> None:
    """uni2ts imports ``hydra.utils.instantiate`` only to decode a distribution config from
    JSON; the tests build the distribution objects directly. Stubbed when hydra-core is
    absent (a call would raise)."""
    if importlib.util.find_spec("hydra") is not None:
        return

    def instantiate(*a, **k):
        raise NotImplementedError("hydra-core is not installed (stub for the parity tests)")

    hydra = types.ModuleType("hydra")
    utils = types.ModuleType("hydra.utils")
    utils.instantiate = instantiate
    hydra.utils = utils
    sys.modules["hydra"], sys.modules["hydra.utils"] = hydra, utils


def uni2ts_upstream(tmp_root: Path):
    """uni2ts 2.0.0's ``uni2ts.model.moirai.module`` and ``uni2ts.distribution`` from the
    wheel in ../shared/reference, unzipped under ``tmp_root``. The packages
    ``uni2ts.model`` and ``uni2ts.model.moirai`` are stubbed so that their ``__init__``s
    (lightning, gluonts) do not run; jaxtyping and hydra are stubbed when absent (see
    above); einops is required."""
    wheel = shared_path("reference", "uni2ts", "uni2ts-2.0.0-py3-none-any.whl")
    pytest.importorskip("einops", reason="uni2ts needs einops")
    root = tmp_root / "uni2ts-2.0.0"
    if not root.exists():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root)
    before = set(sys.modules)
    _stub_jaxtyping()
    _stub_hydra()
    sys.path.insert(0, str(root))
    try:
        for name in ("uni2ts.model", "uni2ts.model.moirai"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*name.split(".")))]
            sys.modules[name] = pkg
        module = importlib.import_module("uni2ts.model.moirai.module")
        distribution = importlib.import_module("uni2ts.distribution")
    finally:
        sys.path.remove(str(root))
        # leave no trace for other tests: uni2ts and the stubs stay reachable only
        # through the returned modules
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("uni2ts", "jaxtyping", "hydra"):
                del sys.modules[name]
    return module, distribution
