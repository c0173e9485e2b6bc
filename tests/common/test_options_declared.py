"""Every command line's options come from one declaration style (common/options.py) and
`--help` describes each of them."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from common.options import default_of

ROOT = Path(__file__).resolve().parents[2]
# module -> the dataclasses its options are declared in (engine.options.config.Config: every section)
CLIS = {
    "engine.train": ("engine.options.config:Config",),
    "engine.cv": ("engine.cv:CvOptions", "engine.options.config:Config"),
    "engine.evaluate": ("engine.evaluate:Options",),
    "engine.predict": ("engine.predict:Options",),
    "engine.report": ("engine.report:Options",),
    "loaders.ffcv": ("loaders.ffcv:WriteOptions",),
    "bench.kernels": ("bench.kernels:Options",),
    "bench.compare": ("bench.compare:Options",),
    "bench.step": ("bench.step:Options",),
    "bench.plot": ("bench.plot:Options",),
    "bench.loaders": ("bench.loaders:Options",),
    "bench.gpu_pack": ("bench.gpu_pack:Options",),
    "bench.gpu_check": ("bench.gpu_check:Options",),
    "bench.e2e": ("bench.e2e:Options", "engine.options.config:Config"),
    "bench.profile": ("bench.profile:Options", "engine.options.config:Config"),
    "bench.tta": ("bench.tta:Options", "engine.options.config:Config"),
    "bench.scale": ("bench.scale:Options", "engine.options.config:Config"),
    "bench.multilabel_ham": ("bench.multilabel_ham:Options",),
    "bench.isa_spread": ("bench.isa_spread:Options",),
    "bench.make_isic_scale": ("bench.make_isic_scale:Options",),
    "bench.sigterm_interrupt": (),  # a wrapper: runs another module's main under a SIGTERM
    "engine.export": ("engine.export:Options",),
    "engine.compare": ("engine.compare:Options",),
}


def _declared(ref: str) -> list[tuple[str, dataclasses.Field]]:
    module, name = ref.split(":")
    cls = getattr(importlib.import_module(module), name)
    if name == "Config":
        return [(f"{s.name}.{f.name}", f) for s in dataclasses.fields(cls) for f in dataclasses.fields(s.default_factory)]
    return [(f.name, f) for f in dataclasses.fields(cls)]


def test_every_cli_with_a_main_is_listed():
    found = set()
    for path in list(ROOT.glob("engine/*.py")) + list(ROOT.glob("bench/*.py")) + list(ROOT.glob("loaders/*.py")):
        if re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M):
            found.add(f"{path.parent.name}.{path.stem}")
    assert found == set(CLIS)


def test_no_cli_parses_its_own_way():
    for path in list(ROOT.glob("engine/**/*.py")) + list(ROOT.glob("bench/*.py")) + list(ROOT.glob("loaders/*.py")):
        assert "argparse" not in path.read_text(), f"{path}: declare options with common.options.opt"


@pytest.mark.parametrize("module", sorted(m for m in CLIS if CLIS[m]))
def test_help_describes_every_declared_option(module, capsys):
    main = importlib.import_module(module).main
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for ref in CLIS[module]:
        for name, f in _declared(ref):
            assert f.metadata.get("help"), f"{module}: --{name} has no help text"
            flag = name.replace("_", "-") if "." not in name else name
            shown = name.upper() if f.metadata.get("positional") else f"--{flag}"
            assert shown in text, f"{module} --help does not show {shown}"
            assert f.metadata["help"] in text, f"{module} --help does not describe {shown}"
            if "choices" in f.metadata:
                assert "|".join(map(str, f.metadata["choices"])) in text
            assert isinstance(default_of(f), (bool, int, float, str, list))


RULES = ("choices", "ge", "gt", "le", "lt")


def _opt_declarations() -> list[tuple[str, str, str]]:
    """(file, option name, its default and rules as written) of every `name: T = opt(...)` that
    has rules or a default other than empty, zero or off."""
    found = []
    for path in sorted(ROOT.glob("*/*.py")):
        if path.parts[-2] in ("tests",) or path.name.startswith("test_"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", "") == "opt"):
                call = node.value
                rules = [k for k in call.keywords if k.arg in RULES]
                empty = isinstance(call.args[0], ast.Constant) and call.args[0].value in ("", 0, False)
                if empty and not rules:
                    continue  # "", 0 or off with no rules: nothing that could drift
                written = [ast.dump(call.args[0])] + sorted(f"{k.arg}={ast.dump(k.value)}" for k in call.keywords
                                                            if k.arg in RULES)
                found.append((str(path.relative_to(ROOT)), node.target.id, "; ".join(written)))
    return found


def test_no_option_default_or_bounds_written_twice():
    """An option the engine and a spec or another CLI share is declared once and reused
    (common.options.like), not written again with the same default and rules."""
    seen: dict[tuple[str, str], str] = {}
    twice = []
    for where, name, written in _opt_declarations():
        if (name, written) in seen:
            twice.append(f"{name} in {seen[name, written]} and {where}")
        seen[name, written] = where
    assert len(seen) > 50  # the scan finds the declarations (engine config, specs, every CLI)
    assert not twice, twice


def test_the_engine_config_reuses_the_data_specs_declarations():
    from engine.options.config import DataConfig, SamplerConfig
    from loaders.spec import DataSpec, LoaderSpec, SamplerSpec

    specs = {f.name: f for cls in (SamplerSpec, LoaderSpec, DataSpec) for f in dataclasses.fields(cls)
             if f.metadata.get("help")}
    for cls in (DataConfig, SamplerConfig):
        for f in dataclasses.fields(cls):
            if f.name in specs and f.name not in ("eval_batch_size",):
                assert f.default == specs[f.name].default
                assert {k: f.metadata.get(k) for k in RULES} == {k: specs[f.name].metadata.get(k) for k in RULES}
