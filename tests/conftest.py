"""Test session settings (loaded by pytest before any test module imports torch)."""
import os

# see tsprune/cli.py: OpenMP workers sleep instead of spinning on a shared CPU
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
