"""The repository's top-level folders never shadow an installed package.

`python -m pytest` (README's test command) puts the repository root on sys.path; a
top-level kernels/ package there once hid Hugging Face's `kernels`, which transformers
imports, and nothing in tsprune could load a model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_transformers_imports_from_the_repository_root():
    res = _run("import transformers.modeling_utils", ROOT)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "kernels", ROOT / "tests"])
def test_kernels_name_never_resolves_into_the_repository(cwd):
    code = ("import importlib.util, sys; sys.path.insert(0, '.'); s = importlib.util.find_spec('kernels');"
            "print('' if s is None else (s.origin or ''), '|', *(s.submodule_search_locations or []) if s else '')")
    res = _run(code, cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(ROOT / "kernels") not in res.stdout, res.stdout


def test_top_level_folders_are_not_packages():
    # a folder without __init__.py is at most a namespace portion, and every installed
    # regular package of the same name wins over it wherever it sits on sys.path
    for d in ROOT.iterdir():
        if d.is_dir() and d.name not in ("tsprune", "tests", "bench"):
            assert not (d / "__init__.py").exists(), d


def test_missing_dependency_message_says_installed_but_broken():
    from tsprune.errors import missing_extra
    broken = missing_extra("transformers>=5 (X)", "timesfm",
                           ImportError("cannot import name 'CUDAProperties' from 'kernels'"),
                           module="transformers")
    assert "not installed" not in str(broken)
    assert "CUDAProperties" in str(broken) and "failed to import" in str(broken)
    absent = missing_extra("surely-absent-pkg", "x", ModuleNotFoundError("No module named 'surely_absent_pkg'"))
    assert "not installed" in str(absent) and "pip install 'tsprune[x]'" in str(absent)
