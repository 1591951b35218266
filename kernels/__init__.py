"""Triton kernels of tsprune, shipped as the package ``tsprune._kernels``.

Never imported as a top-level ``kernels`` module (that name belongs to the
Hugging Face kernel hub); use them through tsprune.ops with backend="triton".
Importing a module here imports triton and decorates its kernels: under
TRITON_INTERPRET=1 (set before this import) they run on CPU tensors.

Per op, three layers: the ``@triton.jit`` kernel (here), a host wrapper that
checks, allocates and launches (here, ``launch_*``), and the torch.library
glue (tsprune/ops/_triton.py).
"""
