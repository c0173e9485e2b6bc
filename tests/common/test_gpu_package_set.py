"""The GPU machine's package set, simulated: nothing may empty `make gpu-check` at import time.

The lent GPU machine has no simplejpeg, wandb, ffcv or DALI (psutil is there). A module-level
import of one of them in a test module stops `pytest -m gpu` at collection and no GPU test
runs; in a module the check imports, a whole step dies. Here a `sitecustomize` on PYTHONPATH
makes those four packages unfindable (as if not installed: `find_spec` answers None, `import`
raises ModuleNotFoundError) in a fresh interpreter, which then collects every test module
(tests and bench, the gpu-marked ones counted against an unblocked collection) and imports
every module of the project.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ABSENT_ON_GPU_MACHINE = ("simplejpeg", "wandb", "ffcv", "nvidia.dali")
PACKAGES = ("common", "engine", "loaders", "kernels", "models", "bench")

BLOCKER = '''
import importlib.machinery, sys
BLOCKED = {blocked!r}
_find = importlib.machinery.PathFinder.find_spec.__func__

def _blocked(name):
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)

def find_spec(cls, fullname, path=None, target=None):
    return None if _blocked(fullname) else _find(cls, fullname, path, target)

importlib.machinery.PathFinder.find_spec = classmethod(find_spec)
for name in [m for m in sys.modules if _blocked(m)]:
    del sys.modules[name]
'''

IMPORT_ALL = '''
import importlib, pkgutil, sys, traceback
failed = []
for package in {packages!r}:
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
'''


def _env(blocker_dir: Path | None) -> dict:
    paths = ([str(blocker_dir)] if blocker_dir else []) + [str(REPO)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), WANDB_MODE="disabled")


def _collect(blocker_dir: Path | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests", "bench", *args], cwd=REPO, env=_env(blocker_dir), capture_output=True,
                          text=True, timeout=300)


def _ids(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stdout.splitlines() if "::" in line]


def _blocker(tmp_path: Path) -> Path:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=ABSENT_ON_GPU_MACHINE))
    return tmp_path


def test_the_blocker_really_hides_the_packages(tmp_path):
    probe = ("import importlib.util, sys\n"
             f"for name in {ABSENT_ON_GPU_MACHINE!r}:\n"
             "    assert importlib.util.find_spec(name) is None, name\n"
             "    try:\n        __import__(name)\n    except ModuleNotFoundError:\n        pass\n"
             "    else:\n        sys.exit(name + ' imported')\n"
             "import psutil\n")
    done = subprocess.run([sys.executable, "-c", probe], env=_env(_blocker(tmp_path)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_test_module_collects_and_the_gpu_set_is_whole_without_those_packages(tmp_path):
    # `-m gpu` still imports every test module (deselection comes after collection).
    blocked = _collect(_blocker(tmp_path), "-m", "gpu")
    assert blocked.returncode == 0 and "ERROR collecting" not in blocked.stdout, \
        blocked.stdout[-3000:] + blocked.stderr[-2000:]
    gpu_blocked, gpu_here = _ids(blocked), _ids(_collect(None, "-m", "gpu"))
    # The GPU check collects exactly what a machine with every package would (and not nothing).
    assert gpu_blocked and gpu_blocked == gpu_here, sorted(set(gpu_here) ^ set(gpu_blocked))[:20]


def test_every_project_module_imports_without_those_packages(tmp_path):
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(packages=PACKAGES)], cwd=REPO,
                          env=_env(_blocker(tmp_path)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
