"""A tiny real run through the CLI entry: the outputs DESIGN lists and the checkpoint round trip.
(One compile per mode: tests/engine/test_engine_runs.py.)"""
import json

import pytest

from engine.run import checkpoint
from engine.train import main
from models.registry import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    # The figures are checked where a run's report is read (tests/engine/test_temperature.py,
    # test_multilabel_engine.py, tests/eval/test_eval_report.py); drawing them here checked nothing
    # (a failed figure only warns) and cost a third of the run.
    code = main(["--preset", "smoke", "--device", "cpu", "--out", str(out), "--wandb", "disabled",
                 "--run.report", "false"])
    assert code == 0
    return out


def test_outputs_as_design_lists(run_dir):
    for name in ("config.json", "metrics.json", "history.jsonl", "checkpoint.pt"):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test.accuracy", "test.balanced_accuracy", "test.f1_macro", "test.auc_macro", "val.accuracy",
                "train.images_per_second", "epochs", "wall_seconds", "device", "versions"):
        assert key in m, key
    assert m["epochs"] == 2 and 0 <= m["test.accuracy"] <= 1
    history = [json.loads(l) for l in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert json.loads((run_dir / "config.json").read_text())["resolved"]["loader"] == "tensor"


def test_checkpoint_round_trip_restores_the_model(run_dir):
    saved = checkpoint.load(run_dir)
    model = build_model(saved["model_name"], len(saved["classes"]), saved["image_size"])
    model.load_state_dict(saved["model"])
    assert not any(k.startswith("_orig_mod.") for k in saved["model"])
    assert set(saved["state"]) >= {"trainer", "rng", "epoch", "step"}

