"""The GPU machine's package set, simulated: nothing may empty `make gpu-check` at import time.

The lent GPU machine has no simplejpeg, wandb, ffcv or DALI (psutil is there). A module-level
import of one of them in a test module stops `pytest -m gpu` at collection and no GPU test
runs; in a module the check imports, a whole step dies. Here a `sitecustomize` on PYTHONPATH
makes those four packages unfindable (as if not installed: `find_spec` answers None, `import`
raises ModuleNotFoundError) in a fresh interpreter, which then collects every test module
(tests and bench, the gpu-marked ones counted against an unblocked collection) and imports
every module of the project.

One blocked interpreter does both (a plugin records the collected items and imports the
modules). The unblocked reference is this pytest session's own items where it collected a
whole directory (`make test` collects all of tests/), and an unblocked collection of the rest
(issue 25: one full collection in a fresh interpreter instead of two, and one torch import less).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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

RECORDER = '''
import importlib, json, os, pkgutil

def _import_all(packages):
    failed = []
    for package in packages:
        root = importlib.import_module(package)
        names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
        for name in names:
            try:
                importlib.import_module(name)
            except BaseException as exc:
                failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
    return failed

def pytest_collection_finish(session):
    items = [[item.nodeid, item.get_closest_marker("gpu") is not None] for item in session.items]
    failed = _import_all({packages!r}) if os.environ.get("GPU_SET_IMPORT_ALL") else []
    with open(os.environ["GPU_SET_RECORD"], "w") as fh:
        json.dump({{"items": items, "import_failures": failed}}, fh)
'''
TEST_DIRS = ("tests", "bench")


def _env(blocker_dir: Path | None) -> dict:
    paths = ([str(blocker_dir)] if blocker_dir else []) + [str(REPO)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), WANDB_MODE="disabled")


def _blocker(tmp_path: Path) -> Path:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=ABSENT_ON_GPU_MACHINE))
    return tmp_path


def _collect(folder: Path, blocked: bool, dirs: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, dict]:
    """`pytest --collect-only` of `dirs` in a fresh interpreter, the packages hidden or not; what
    the recorder saw (items, gpu-marked or not; and with the packages hidden, every project
    module imported once collection is done)."""
    (folder / "gpu_set_recorder.py").write_text(RECORDER.format(packages=PACKAGES))
    env = _env(_blocker(folder) if blocked else None)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    env |= {"GPU_SET_RECORD": str(folder / "record.json"), "GPU_SET_IMPORT_ALL": "1" if blocked else ""}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "gpu_set_recorder", *dirs], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    record = folder / "record.json"
    return done, json.loads(record.read_text()) if record.exists() else {"items": [], "import_failures": ["no record"]}


def _gpu_ids(items) -> list[str]:
    return [nodeid for nodeid, gpu in items if gpu]


def _whole_in_session(session, folder: str) -> bool:
    """Whether this session collected every test file under `folder`, unfiltered: then its own
    items are the unblocked collection of that folder."""
    option = session.config.option
    if option.keyword or option.markexpr or getattr(option, "deselect", None) or getattr(option, "lf", False):
        return False
    files = {str(path.relative_to(REPO)) for path in (REPO / folder).rglob("test_*.py")}
    collected = {item.nodeid.split("::")[0] for item in session.items}
    return bool(files) and files <= collected


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    return _collect(tmp_path_factory.mktemp("blocked"), True, TEST_DIRS)


def test_the_blocker_really_hides_the_packages(tmp_path):
    probe = ("import importlib.util, sys\n"
             f"for name in {ABSENT_ON_GPU_MACHINE!r}:\n"
             "    assert importlib.util.find_spec(name) is None, name\n"
             "    try:\n        __import__(name)\n    except ModuleNotFoundError:\n        pass\n"
             "    else:\n        sys.exit(name + ' imported')\n"
             "import psutil\n")
    done = subprocess.run([sys.executable, "-c", probe], env=_env(_blocker(tmp_path)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_test_module_collects_and_the_gpu_set_is_whole_without_those_packages(blocked, request, tmp_path):
    # Collection imports every test module whatever -m selects (`make gpu-check` runs -m gpu).
    done, record = blocked
    assert done.returncode == 0 and "ERROR collecting" not in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    in_session = [d for d in TEST_DIRS if _whole_in_session(request.session, d)]
    here = [[item.nodeid, item.get_closest_marker("gpu") is not None] for item in request.session.items
            if item.nodeid.split("/")[0] in in_session]
    rest = tuple(d for d in TEST_DIRS if d not in in_session)
    if rest:
        unblocked, record_here = _collect(tmp_path, False, rest)
        assert unblocked.returncode == 0, unblocked.stdout[-3000:] + unblocked.stderr[-2000:]
        here += record_here["items"]
    gpu_blocked, gpu_here = sorted(_gpu_ids(record["items"])), sorted(_gpu_ids(here))
    # The GPU check collects exactly what a machine with every package would (and not nothing).
    assert gpu_blocked and gpu_blocked == gpu_here, sorted(set(gpu_here) ^ set(gpu_blocked))[:20]


def test_every_project_module_imports_without_those_packages(blocked):
    done, record = blocked
    assert not record["import_failures"], "\n".join(record["import_failures"])[-3000:] + done.stderr[-2000:]
