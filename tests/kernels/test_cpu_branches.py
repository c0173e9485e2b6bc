"""What legitimately differs by CPU, each branch checked whatever CPU runs the suite (issue 25).

- bf16: `--amp` (dtype auto) trains in bf16 only where the CPU has AVX512-BF16 or AMX, in fp32
  elsewhere (emulated bf16 is ~10x slower); the CPU's flags are faked both ways here.
- the native C kernel: built for this CPU (-march=native) unless MEDTRAIN_NATIVE_MARCH names a
  narrower one, which the suite uses to emulate a CPU without AVX-512; the value is part of
  the build's cache key, so the two builds never share a library.
"""
from __future__ import annotations

import io

import pytest
import torch

import engine.run.precision
from common.errors import ConfigError
from engine.options.config import parse_args
from kernels import native_build


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 fma", False), ("avx2 avx512f avx512_bf16", True),
                                           ("avx2 avx512f amx_bf16 amx_tile", True)])
def test_amp_takes_bf16_exactly_where_the_cpu_has_it(monkeypatch, flags, native):
    monkeypatch.setattr(engine.run.precision, "open", lambda *a, **k: io.StringIO(f"flags\t: {flags}\n"), raising=False)
    cpu = torch.device("cpu")
    assert engine.run.precision.fast_bf16(cpu) is native
    cfg = parse_args(["--preset", "dermamnist", "--amp"]).config
    assert engine.run.precision.autocast_dtype(cfg, cpu) == (torch.bfloat16 if native else None)


def test_native_march_narrows_the_build_and_its_cache_key(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTRAIN_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv(native_build.MARCH_ENV, raising=False)
    assert "-march=native" in native_build.flags()
    monkeypatch.setenv(native_build.MARCH_ENV, "x86-64-v2")
    assert "-march=x86-64-v2" in native_build.flags() and "-march=native" not in native_build.flags()
    compiler = native_build._compiler()
    if compiler is None:
        pytest.skip("no C compiler: the eager path is what runs (tests/kernels/test_bn_pool_relu_cpu.py)")
    source = native_build.SOURCE_DIR / "bn_pool_relu.c"
    narrow = native_build._build(source, compiler)
    monkeypatch.delenv(native_build.MARCH_ENV)
    wide = native_build._build(source, compiler)
    assert narrow != wide and narrow.exists() and wide.exists()


def test_a_bad_march_value_is_one_config_error(monkeypatch):
    monkeypatch.setenv(native_build.MARCH_ENV, "native; rm -rf /")
    with pytest.raises(ConfigError, match="MEDTRAIN_NATIVE_MARCH"):
        native_build.flags()
