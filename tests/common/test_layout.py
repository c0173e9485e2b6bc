"""engine/ grouped by role (issue 28): the top level holds the CLIs `python -m engine.X` runs and
nothing else; the subpackages are named for their role and their __init__ files do nothing."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "engine"
GROUPS = ['options', 'output', 'plan', 'run', 'score']
FLOOR = ['atomic', 'run_lock', 'data_identity']


def test_the_engine_top_level_holds_only_clis():
    top = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    not_clis = [name for name in top
                if not re.search(r"^if __name__ == .__main__.:", (ENGINE / f"{name}.py").read_text(), re.M)]
    assert not not_clis, f"engine/: not a CLI, belongs in a subpackage: {not_clis}"


def test_the_subpackages_are_the_roles():
    found = {p.name for p in ENGINE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert found == set(GROUPS), found
    for group in GROUPS:
        assert (ENGINE / group / "__init__.py").exists(), group
        nested = [p for p in (ENGINE / group).glob("*/__init__.py")]
        assert not nested, f"engine/{group}: one level only: {nested}"


def test_subpackage_inits_have_no_side_effects():
    for group in GROUPS:
        tree = ast.parse((ENGINE / group / "__init__.py").read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        assert not body, f"engine/{group}/__init__.py runs code"


def test_the_floor_utilities_live_in_common():
    for name in FLOOR:
        assert (REPO / "common" / f"{name}.py").exists() and not list(ENGINE.rglob(f"{name}.py")), name
