"""Tracking: offline by default, the environment can only make it stricter, no wandb is fine."""
import importlib.util

import pytest

from engine.output import tracking


@pytest.mark.parametrize("configured,env,expected", [
    ("offline", "", "offline"), ("online", "", "online"), ("online", "offline", "offline"),
    ("online", "disabled", "disabled"), ("offline", "online", "offline"), ("disabled", "online", "disabled"),
])
def test_environment_only_makes_tracking_stricter(monkeypatch, configured, env, expected):
    monkeypatch.setenv("WANDB_MODE", env) if env else monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.effective_mode(configured) == expected


def test_without_wandb_installed_the_run_goes_on_untracked(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    tracker = tracking.start_tracker({"a": 1}, tmp_path, "offline")
    assert not tracker.active
    assert "wandb is not installed" in caplog.text
    tracker.log_epoch({"epoch": 0, "train.loss": 1.0})
    tracker.finish({"test.accuracy": 0.5}, tmp_path)


def test_disabled_never_imports_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a: pytest.fail("looked for wandb"))
    assert not tracking.start_tracker({}, tmp_path, "disabled").active


class RecordingRun:
    """Stands in for a wandb run: records what the tracker hands over."""

    def __init__(self):
        self.logged, self.summary, self.finished = [], {}, False

    def log(self, data, step=None):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


def test_tracker_sends_numeric_epoch_rows_final_metrics_and_report_images(tmp_path):
    pytest.importorskip("wandb")
    from PIL import Image
    (tmp_path / "report").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "report" / "roc_curves.png")
    run = RecordingRun()
    tracker = tracking.Tracker(run)
    tracker.log_epoch({"epoch": 3, "train.loss": 0.5, "train.class_histogram": [1, 2], "flag": True})
    tracker.finish({"test.accuracy": 0.75, "classes": ["a"], "device": "cpu"}, tmp_path / "report")
    assert run.logged[0] == (3, {"epoch": 3, "train.loss": 0.5})
    assert run.summary == {"test.accuracy": 0.75, "device": "cpu"}
    assert list(run.logged[1][1]) == ["report/roc_curves"]
    assert run.finished and not tracker.active


@pytest.mark.slow
def test_offline_run_writes_its_files_into_the_run_folder(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    from PIL import Image
    (tmp_path / "report").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "report" / "confusion_matrix.png")
    tracker = tracking.start_tracker({"train": {"epochs": 2}}, tmp_path, "offline")
    assert tracker.active and dict(tracker.run.config)["train"] == {"epochs": 2}
    for epoch in range(2):
        tracker.log_epoch({"epoch": epoch, "train.loss": 1.0 / (epoch + 1)})
    tracker.finish({"test.accuracy": 0.75, "tta": True, "test.temperature": 1.5}, tmp_path / "report")
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and list(run_dirs[0].glob("run-*.wandb"))
    assert list(run_dirs[0].glob("files/media/images/report/confusion_matrix_*.png"))


def test_the_summary_carries_every_scalar_of_metrics_json_calibration_tta_and_ensemble_included():
    """The dict handed to wandb's summary (tested without wandb: it is built before wandb is touched)."""
    metrics = {"test.accuracy": 0.75, "test.ece": 0.05, "test.ece_uncalibrated": 0.12, "test.temperature": 1.7,
               "val.ece": 0.04, "val.ece_uncalibrated": 0.1, "val.temperature": 1.7, "tta": True,
               "ensemble_folds": 5, "calibration.note": "temperature kept at 1: ...", "epochs": 3,
               "test.auc_macro": None, "classes": ["a", "b"], "test.confusion": [[1, 0], [0, 1]],
               "versions": {"torch": "2"}}
    summary = tracking.summary_of(metrics)
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict, type(None)))}
    assert summary == scalars and summary["tta"] is True
    run = RecordingRun()
    tracking.Tracker(run).finish(metrics)
    assert run.summary == scalars and run.finished
