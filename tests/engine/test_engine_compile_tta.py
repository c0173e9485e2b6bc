"""`--compile --tta`: the final evaluation runs the 8 views through the one compiled eval twin.

The defect: the TTA wrapper's state dict (`model.*` keys) was loaded into the bare compiled
twin and the run died at the final evaluation; had the keys matched, TTA would have been
skipped without a word. A counting backend (dynamo's graph run as-is) keeps this seconds-long:
the compiled run must then give the eager TTA run's figures exactly, and differ from no TTA.
"""
from __future__ import annotations

import torch

from engine.run import loop
from engine.train import main
from engine_testkit import FAST, metrics
from tests.helpers import skip_report

FIGURES = ("test.accuracy", "test.balanced_accuracy", "test.auc_macro", "val.auc_macro")


def _run(tmp_path, monkeypatch, name: str, *extra: str) -> dict:
    skip_report(monkeypatch)
    out = tmp_path / name
    assert main(FAST + ["--epochs", "1", "--seed", "5", "--train.deterministic", "true", "--out", str(out), *extra]) == 0
    return metrics(out)


def test_compiled_tta_equals_eager_tta_with_one_eval_compile(tmp_path, monkeypatch):
    compiled = []

    def counting_backend(gm, example_inputs):
        compiled.append("train" if torch.is_grad_enabled() else "eval")
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(loop, "COMPILE_BACKEND", counting_backend)
    with_compile = _run(tmp_path, monkeypatch, "compiled", "--compile", "--tta")
    assert sorted(compiled) == ["eval", "train"], compiled  # the 8 views reuse the eval graph
    torch._dynamo.reset()
    eager_tta = _run(tmp_path, monkeypatch, "eager_tta", "--tta")
    no_tta = _run(tmp_path, monkeypatch, "eager", "--run.tta", "false")  # the plan turns TTA on by default
    for key in FIGURES:
        assert with_compile[key] == eager_tta[key], key
    assert any(eager_tta[key] != no_tta[key] for key in FIGURES), "TTA changed no figure: was it applied?"
