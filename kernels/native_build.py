"""Compiles the C kernels in kernels/native/ with the system C compiler at first use.

No build step at install time and no torch headers: a plain C file with OpenMP, compiled in
well under a second, cached per source, compiler and CPU (the code is built for the CPU it
runs on), and loaded with ctypes. It links the libgomp that torch already loaded (same
soname), so kernels and torch share one OpenMP runtime and its sleeping-wait settings
(common/cpu_wait.py). Without a compiler the caller gets None and its eager path, and one
log line says so. MEDTRAIN_NATIVE_KERNELS=off takes the eager paths on purpose (A/B runs, the
golden test that pins the eager layers' numbers). MEDTRAIN_NATIVE_MARCH=x86-64-v3 (or any -march
value; default `native`) builds for a narrower CPU than this one: the suite uses it to emulate a
CPU without AVX-512 (docs/cpu.md, "Figures that depend on the CPU"); the value is in the cache key.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from common.atomic import atomic_path
from common.errors import ConfigError
from common.cache import cache_root

log = logging.getLogger("medtrain.kernels")

SOURCE_DIR = Path(__file__).with_name("native")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-ffp-contract=off"]
MARCH_ENV = "MEDTRAIN_NATIVE_MARCH"
_loaded: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    """$MEDTRAIN_KERNEL_CACHE, else kernels/ under the project's one cache root (common/cache.py),
    which tests isolate with the rest of the cache."""
    override = os.environ.get("MEDTRAIN_KERNEL_CACHE")
    return Path(override) if override else cache_root() / "kernels"


def _cpu_identity() -> str:
    """The CPU's model and flags: -march=native code must not be reused on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def flags() -> list[str]:
    """FLAGS with -march from MEDTRAIN_NATIVE_MARCH when set (a token such as x86-64-v3)."""
    march = os.environ.get(MARCH_ENV, "").strip()
    if not march:
        return list(FLAGS)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", march):
        raise ConfigError(f"{MARCH_ENV}={march!r} is not a -march value (for example native, x86-64-v3)")
    return [f"-march={march}" if f.startswith("-march=") else f for f in FLAGS]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(source: Path, compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    build_flags = flags()
    key = hashlib.sha256("\0".join([source.read_text(), compiler, version, _cpu_identity(), *build_flags]).encode())
    target = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    # Built beside the target and renamed: concurrent runs never load a half-written library.
    with atomic_path(target) as tmp:
        done = subprocess.run([compiler, *build_flags, str(source), "-o", str(tmp), "-lm"], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
    return target


def load_native(name: str) -> ctypes.CDLL | None:
    """kernels/native/<name>.c as a loaded library, or None (logged once) where it cannot be built."""
    if name in _loaded:
        return _loaded[name]
    import torch  # noqa: F401  (its libgomp must be loaded first: ours links to the same soname)

    lib = None
    compiler = _compiler()
    if os.environ.get("MEDTRAIN_NATIVE_KERNELS", "").strip().lower() in ("off", "0", "false", "no"):
        log.info("MEDTRAIN_NATIVE_KERNELS is off: kernels/native/%s.c is not used, eager PyTorch runs instead", name)
    elif compiler is None:
        log.warning("no C compiler (cc, gcc or clang) on PATH: the fused CPU kernels are off, eager PyTorch runs instead")
    else:
        try:
            lib = ctypes.CDLL(str(_build(SOURCE_DIR / f"{name}.c", compiler)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("could not build kernels/native/%s.c with %s (%s): eager PyTorch runs instead", name,
                        compiler, exc)
    _loaded[name] = lib
    return lib
