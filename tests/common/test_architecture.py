"""The house rules issue 16 set, checked on the source itself so a regression fails CI:
the floors (common < loaders/models/kernels < engine), short functions, one error wrapper,
shared constants defined once, a light config, tests laid out like the packages."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "engine", "loaders", "kernels", "models", "bench")
MAX_FUNCTION_LINES = 80


def _modules(*packages: str):
    for pkg in packages:
        for path in sorted((REPO / pkg).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def _imported_roots(tree: ast.AST) -> set[str]:
    """Top-level package of every import, at module level or inside a function."""
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("lower, forbidden", [
    ("loaders", {"engine", "bench"}), ("models", {"engine", "bench", "loaders"}),
    ("kernels", {"engine", "bench", "loaders", "models"}), ("common", {"engine", "bench", "loaders", "models", "kernels"}),
])
def test_lower_floors_never_import_the_engine(lower, forbidden):
    offenders = [f"{path.relative_to(REPO)} imports {sorted(_imported_roots(tree) & forbidden)}"
                 for path, tree in _modules(lower) if _imported_roots(tree) & forbidden]
    assert not offenders, offenders


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules(*PACKAGES) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def _prints_an_error_line(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print" and node.args):
        return False
    first = node.args[0]
    if isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
        first = first.values[0]
    return isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("error:")


def test_the_error_wrapper_exists_once():
    sites = [f"{path.relative_to(REPO)}:{node.lineno}" for path, tree in _modules(*PACKAGES)
             for node in ast.walk(tree) if _prints_an_error_line(node)]
    assert sites == [sites[0]] and sites[0].startswith("common/cli.py"), sites


@pytest.mark.parametrize("name", ["PAD_LABEL", "BOOTSTRAP_RESAMPLES", "sync", "cache_root", "default_workers"])
def test_shared_names_are_defined_once(name):
    where = []
    for path, tree in _modules(*PACKAGES):
        for node in tree.body:  # module level: constants and functions
            if isinstance(node, ast.FunctionDef) and node.name == name:
                where.append(str(path.relative_to(REPO)))
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                where.append(str(path.relative_to(REPO)))
    assert len(where) == 1, where


def test_parsing_the_config_imports_nothing_heavy():
    # loaders.spec (the data options' declarations, common/ imports only) is the one light
    # module of the data layer the config reads.
    code = ("import sys, engine.options.config, common.cli; engine.options.config.parse_args(['--preset', 'smoke']).config; "
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'models', 'kernels') if m in sys.modules]; "
            "heavy += [m for m in sys.modules if m.startswith('loaders.') and m != 'loaders.spec']; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_loaders_and_models_take_specs_not_the_config():
    """`Config` never appears in the data or model layers' signatures or bodies."""
    offenders = [f"{path.relative_to(REPO)}:{node.lineno}" for path, tree in _modules("loaders", "models", "kernels")
                 for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in ("Config", "DataConfig")]
    assert not offenders, offenders


def test_test_folders_mirror_the_packages():
    """Package tests live in tests/<package>/; the cross-cutting suites have their own folders;
    nothing loose at the top but the shared conftest."""
    cross_cutting = {"dist", "eval", "recipes", "reliability"}
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders <= set(PACKAGES) | cross_cutting, folders - set(PACKAGES) - cross_cutting
    loose = sorted(p.name for p in (REPO / "tests").glob("test_*.py"))
    assert not loose, loose


ASSEMBLY = "engine/run/build.py"
ASSEMBLED = {"Run", "Trainer", "build_model"}  # the run, the trainer, the model from the registry


def test_runs_trainers_and_models_are_assembled_in_one_module():
    """Only engine/run/build.py constructs them (with keywords for Run); everything else asks it
    (build, scoring_run, trainer_alone, bare_model, build_model_for)."""
    offenders = []
    for path, tree in _modules("engine", "loaders", "kernels", "models", "bench"):
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in ASSEMBLED or where == "models/registry.py" and name == "build_model":
                continue
            if where != ASSEMBLY:
                offenders.append(f"{where}:{node.lineno} calls {name}(...)")
            elif name == "Run" and node.args:
                offenders.append(f"{where}:{node.lineno} builds a Run with positional arguments")
    assert not offenders, offenders


def test_the_augmentation_imports_one_way():
    """The reference imports nothing of the project; the implementations import the reference,
    never the dispatcher (kernels/augment.py), which imports them lazily."""
    trees = {p.name: t for p, t in _modules("kernels") if p.name.startswith("augment")}
    project = lambda t: {n.module for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module  # noqa: E731
                         and n.module.split(".")[0] in PACKAGES}
    assert project(trees["augment_reference.py"]) == set()
    for name in ("augment_cpu.py", "augment_triton.py"):
        assert "kernels.augment" not in project(trees[name]), name


# -- start-up (common/startup.py) ----------------------------------------------------------------

LOADS_TORCH = ("torch", "engine", "loaders", "kernels", "models", "bench", "torchvision", "timm")


def _entry_modules() -> list[Path]:
    """`python -m` modules, and the conftest.py files pytest enters by (`pytest bench` never
    reads tests/conftest.py: without its own call the benchmarks measured spinning waits)."""
    entries = [p for pkg in PACKAGES + ("tests",) for p in (REPO / pkg).rglob("*.py")
               if 'if __name__ == "__main__"' in p.read_text() and p != Path(__file__).resolve()]
    return sorted(entries + [REPO / "tests" / "conftest.py", REPO / "bench" / "conftest.py"])


def test_every_entry_point_calls_start_before_anything_can_load_torch():
    entries = _entry_modules()
    assert len(entries) >= 20 and REPO / "engine" / "train.py" in entries and REPO / "bench" / "gpu_check.py" in entries
    late = []
    for path in entries:
        body = ast.parse(path.read_text()).body
        calls = [i for i, node in enumerate(body) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "id", None) == "start"]
        imported_before = [n.module if isinstance(n, ast.ImportFrom) else a.name
                           for n in body[:calls[0] if calls else len(body)] if isinstance(n, (ast.Import, ast.ImportFrom))
                           for a in (n.names if isinstance(n, ast.Import) else [None])]
        if not calls or any(m and m.split(".")[0] in LOADS_TORCH for m in imported_before):
            late.append(str(path.relative_to(REPO)))
    assert not late, f"entry points that do not call common.startup.start() first: {late}"


def test_package_inits_have_no_side_effects():
    busy = []
    for pkg in PACKAGES:
        body = ast.parse((REPO / pkg / "__init__.py").read_text()).body
        busy += [f"{pkg}/__init__.py:{n.lineno}" for n in body
                 if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]  # a docstring only
    assert not busy, f"package __init__ statements (start-up is common.startup.start(), called by entry points): {busy}"


# Figures belong in bench/results, where they say how they were measured (docs/design.md).
FIGURE = re.compile(r"\b\d[\d,.]*\s?(ms|us|img/s|it/s)\b|\bmeasured\b", re.IGNORECASE)


@pytest.mark.parametrize("module", ["engine/run/env.py", "engine/run/memory.py", "common/cpu_wait.py", "kernels/augment_cpu.py"])
def test_no_measured_figures_in_docstrings(module):
    tree = ast.parse((REPO / module).read_text())
    docs = [ast.get_docstring(n) or "" for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    hits = [m.group(0) for d in docs for m in FIGURE.finditer(d)]
    assert not hits, f"{module}: figures in docstrings (move them to bench/results): {hits}"


def test_shared_test_set_up_lives_in_tests_helpers():
    # conftest.py files hold fixtures; helpers that tests import live in tests/helpers.py.
    tests = REPO / "tests"
    others = [p for p in tests.rglob("*.py") if p not in (Path(__file__).resolve(), tests / "helpers.py")]
    wrong = [str(p.relative_to(REPO)) for p in others
             if "from tests.conftest import" in p.read_text() or "def write_jpegs(" in p.read_text()]
    assert not wrong, f"import shared set-up from tests.helpers: {wrong}"


ATOMIC_HELPER = "common/atomic.py"


def test_every_temp_and_rename_goes_through_the_atomic_helper():
    """A rename over a target is how a write becomes atomic; done by hand it forgets the fsync,
    the cleanup on failure or the file mode. Only common/atomic.py renames (os.replace,
    os.rename, Path.rename/replace, shutil.move)."""
    offenders = []
    for path, tree in _modules(*PACKAGES):
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if where == ATOMIC_HELPER or not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = getattr(node.func.value, "id", None)
            if node.func.attr in ("replace", "rename") and owner == "os" or node.func.attr == "rename" \
                    or node.func.attr == "move" and owner == "shutil" \
                    or node.func.attr == "replace" and len(node.args) == 1 and not node.keywords \
                    and not isinstance(node.func.value, ast.Constant) and _looks_like_a_path(node.args[0]):
                offenders.append(f"{where}:{node.lineno} {ast.unparse(node.func)}(...)")
    assert not offenders, offenders


def _looks_like_a_path(arg: ast.AST) -> bool:
    """`Path.replace(target)` takes one path; `str.replace` takes two strings."""
    return not isinstance(arg, ast.Constant)


# Names that several modules define on purpose, each for the same role in its own module:
SAME_ROLE = {
    "main": "each CLI's entry point: `python -m PACKAGE.MODULE` runs its `main(argv)`",
    "Options": "each CLI's option declarations (common/options.py reads them, tests/common/test_options_declared.py"
               " finds them by this name)",
    "build": "engine/run/build.py's `build(cfg) -> Run`, and in models/ the per-architecture builders the registry"
             " names as 'models.<module>:build', one signature (num_classes, image_size, in_channels, dropout)",
    "pytest_configure": "a pytest hook: pytest calls it by this name in a conftest or plugin",
}
MODEL_BUILDERS = {"models/mlp.py", "models/resnet9.py", "models/seedcnn.py"}


def _top_level_names():
    names = {}
    for path, tree in _modules(*PACKAGES):
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    return names


def test_no_public_name_is_defined_in_two_modules_for_different_things():
    """A reader (or an import) finding `resolve` or `fit` should not have to ask which one."""
    twice = {name: where for name, where in _top_level_names().items() if len(where) > 1 and name not in SAME_ROLE}
    assert not twice, twice


def test_build_is_the_assembly_or_a_registered_model_builder():
    from models.registry import MODELS
    registered = {ref.split(":")[0].replace(".", "/") + ".py" for ref in MODELS.values() if ref.endswith(":build")}
    assert registered == MODEL_BUILDERS
    assert set(_top_level_names()["build"]) == {ASSEMBLY} | MODEL_BUILDERS
