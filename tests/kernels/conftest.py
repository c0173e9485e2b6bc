"""Kernel tests run the Triton kernels on the CPU through the interpreter when there is no GPU.

`triton.jit` decides at decoration time whether to interpret, and kernels/augment_triton.py is
imported lazily, so setting the variable here (before any test imports it) is enough for a
plain `pytest -q` in CI. With a GPU the variable is left alone and the compiled kernels run.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
