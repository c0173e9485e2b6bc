"""Every command README.md and docs/ name answers `--help` as documented: exit 0, a usage text,
no traceback. A renamed or broken entry point fails here before a reader finds it."""
from __future__ import annotations

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


@pytest.mark.parametrize("module", documented_modules())
def test_documented_command_answers_help(module):
    assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{module} is documented but does not exist"
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    says_how = "usage" in out.stdout.lower() or f"python -m {module}" in out.stdout
    assert "Traceback" not in out.stderr and says_how, out.stdout[:500] + out.stderr[-500:]


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
