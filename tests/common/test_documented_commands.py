"""Every command README.md and docs/ name answers `--help` as documented: exit 0, a usage text,
no traceback. A renamed or broken entry point fails here before a reader finds it.

One interpreter imports torch once and forks a child per command, which runs the module as
`python -m MODULE --help` does (runpy, `__main__`, its own stdout/stderr and exit status): 14
commands for one torch import instead of 14 (about 30 s less on the loaded 2-core machine,
issue 25). The fork keeps the commands from seeing each other's imports or state."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OURS = ("engine.", "bench.", "loaders.", "kernels.", "models.")


def documented_modules() -> list[str]:
    found = set()
    for doc in DOCS:
        text = doc.read_text()
        found |= set(re.findall(r"python3? -m ((?:engine|bench|loaders|kernels|models)\.\w+)", text))
        found |= {f"bench.{m}" for m in re.findall(r"`bench\.(\w+)`", text)}  # "bench.e2e, bench.tta" lists
    return sorted(found)


def test_the_docs_name_the_main_commands():
    assert {"engine.train", "engine.evaluate", "engine.predict", "engine.cv", "bench.e2e"} <= set(documented_modules())


HELP_IN_FORKS = r'''
import json, os, runpy, sys, tempfile
import torch  # noqa: F401  (imported once, before the forks: what they share)
results = {}
for module in sys.argv[1:]:
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        sys.argv = [module, "--help"]
        code = 0
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.seek(0); err.seek(0)
    results[module] = {"code": os.waitstatus_to_exitcode(status), "stdout": out.read().decode(errors="replace"),
                       "stderr": err.read().decode(errors="replace")}
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def help_outputs() -> dict:
    done = subprocess.run([sys.executable, "-c", HELP_IN_FORKS, *documented_modules()], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", documented_modules())
def test_documented_command_answers_help(module, help_outputs):
    assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{module} is documented but does not exist"
    out = help_outputs[module]
    assert out["code"] == 0, out["stderr"][-2000:]
    says_how = "usage" in out["stdout"].lower() or f"python -m {module}" in out["stdout"]
    assert "Traceback" not in out["stderr"] and says_how, out["stdout"][:500] + out["stderr"][-500:]


def test_help_in_forks_reports_a_failing_command():
    """The shared runner is not blind: a module that exits 2 or raises is reported as such."""
    code = HELP_IN_FORKS.replace("import torch", "import json as torch")  # no torch import for json.tool
    done = subprocess.run([sys.executable, "-c", code, "json.tool", "this_module_does_not_exist"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["json.tool"]["code"] == 0 and "usage" in got["json.tool"]["stdout"]
    assert got["this_module_does_not_exist"]["code"] == 1
    assert "No module named" in got["this_module_does_not_exist"]["stderr"]


def test_docs_link_only_to_files_that_exist():
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not target.startswith("http") and not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not missing, missing


def test_no_reference_to_a_design_file_that_does_not_exist():
    sources = [p for pkg in ("engine", "loaders", "kernels", "models", "bench", "common") for p in (REPO / pkg).rglob("*.py")]
    stale = [str(p.relative_to(REPO)) for p in sources + DOCS if "DESIGN.md" in p.read_text()]
    assert not stale, stale
