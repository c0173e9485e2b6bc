"""A full disk or a read-only folder while evaluating, predicting or tracking with wandb: one
`error:` line, exit status 1, and the files already written stay whole."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common import atomic
from engine import evaluate, predict
from engine.train import main as train_main
from tests.helpers import skip_report

from . import broken, cli_in_process
from .test_rel_faults import tiny_disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = broken.good_folder(root / "data", n=24, classes=("a", "b"))
    assert train_main(broken.fast_run_args(data, root / "run")) == 0  # no report figures: not under test
    return data, root / "run"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    return errors[0]


# -- evaluate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, reason", [(_no_space, "No space left on device"), (_read_only, "Read-only file system")])
def test_evaluate_on_a_full_or_read_only_disk_keeps_the_previous_metrics(trained, tmp_path, monkeypatch, capsys,
                                                                        fault, reason):
    skip_report(monkeypatch)  # figures come after metrics.json: not reached
    data, run = trained
    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    monkeypatch.setattr(atomic.os, "fsync", fault)
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out), "--tta"]) == 1
    assert _one_error(capsys) == (f"error: could not write {out / 'metrics.json'} ({reason}); "
                                  "the previous metrics.json is kept")
    assert (out / "metrics.json").read_text() == before and json.loads(before)["tta"] is False
    assert not list(out.glob(".*.tmp"))


def test_a_full_disk_while_drawing_the_evaluation_report_is_an_error_not_a_warning(trained, tmp_path, monkeypatch,
                                                                                    capsys):
    from engine.output import plots
    data, run = trained
    monkeypatch.setattr(plots, "atomic_write_bytes", lambda path, write: atomic.atomic_write_bytes(path, _no_space))
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(tmp_path / "e")]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: could not write {tmp_path / 'e' / 'report'}") and "No space left" in line
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["test.n"] > 0  # written before: whole


def test_evaluate_into_a_path_under_a_file_is_one_line(trained, tmp_path, capsys):
    data, run = trained
    (tmp_path / "results.txt").write_text("not a folder")
    assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(tmp_path / "results.txt" / "e")]) == 1
    line = _one_error(capsys)
    assert str(tmp_path / "results.txt") in line and "Not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the path-under-a-file case covers it")
def test_evaluate_into_a_read_only_folder_is_one_line(trained, tmp_path, capsys):
    data, run = trained
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert evaluate.main(["--checkpoint", str(run), "--data", str(data), "--out", str(locked / "e")]) == 1
        assert "Permission denied" in _one_error(capsys)
    finally:
        locked.chmod(0o755)


# -- predict -------------------------------------------------------------------------------------

def test_predict_on_a_full_disk_keeps_the_previous_csv(trained, tmp_path, monkeypatch, capsys):
    data, run = trained
    out = tmp_path / "preds.csv"
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    assert predict.main(["--checkpoint", str(run), "--data", str(data), "--out", str(out), "--tta"]) == 1
    assert _one_error(capsys) == f"error: could not write {out} (No space left on device); the previous preds.csv is kept"
    assert out.read_bytes() == before


def test_predict_into_a_path_under_a_file_from_the_cli(trained, tmp_path, capfd):
    data, run = trained
    (tmp_path / "file").write_text("x")
    result = cli_in_process.run_cli(capfd, ["--checkpoint", run, "--data", data, "--out", tmp_path / "file" / "p.csv",
                                            "--device", "cpu"], module="engine.predict")
    line = broken.error_line(result, status=1)
    assert line == f"error: could not write {tmp_path / 'file'} (a file is there, not a folder); choose another --out"


# -- wandb ---------------------------------------------------------------------------------------

@pytest.fixture
def wandb_on(monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_on_a_nearly_full_disk_stops_the_run_at_once_with_one_line(tmp_path, wandb_on, monkeypatch, capsys):
    from collections import namedtuple

    from engine.output import tracking_guard
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(tracking_guard.shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30, 2**20))
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "run"
    args = broken.fast_run_args(data, out)
    args[args.index("--wandb") + 1] = "offline"
    assert train_main(args) == 1
    assert _one_error(capsys) == (f"error: could not write {out / 'wandb'} (No space left on device: 1 MiB free, "
                                  "tracking needs 16); free some space or use --wandb disabled")
    assert json.loads((out / "config.json").read_text())["wandb"]["mode"] == "offline"  # written before: whole


def test_wandb_folder_that_cannot_be_created_is_one_line(tmp_path, wandb_on, capsys):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "run"
    out.mkdir()
    (out / "wandb").write_text("a file where wandb wants its folder")
    args = broken.fast_run_args(data, out)
    args[args.index("--wandb") + 1] = "offline"
    assert train_main(args) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: could not write {out / 'wandb'}") and "--wandb disabled" in line


def test_a_failed_wandb_write_ends_tracking_quietly_as_one_write_error(tmp_path):
    from common.atomic import WriteError
    from engine.output.tracking import Tracker

    class FullDiskRun:
        finished_with = None

        def log(self, data, step=None):
            raise OSError(errno.ENOSPC, "No space left on device", "/r/report/roc.png", None,
                          str(tmp_path / "wandb" / "media" / "roc.png"))

        def finish(self, exit_code=0):
            FullDiskRun.finished_with = exit_code

    tracker = Tracker(FullDiskRun(), tmp_path / "wandb")
    with pytest.raises(WriteError) as info:
        tracker.log_epoch({"epoch": 0, "train.loss": 1.0})
    assert str(info.value).startswith(f"could not write {tmp_path / 'wandb' / 'media' / 'roc.png'} "
                                      "(No space left on device); tracking stopped")
    assert FullDiskRun.finished_with == 1 and not tracker.active
    tracker.finish({"test.accuracy": 1.0})  # nothing left to write: a no-op


# The child fills the run's disk right after wandb starts, as another job on the machine might.
FILL_AFTER_WANDB_STARTS = textwrap.dedent("""
    import sys
    from engine.output import tracking
    from engine.train import main
    real_start = tracking.start_tracker

    def start_then_fill(config, run_dir, *args, **kwargs):
        tracker = real_start(config, run_dir, *args, **kwargs)
        try:
            with open(sys.argv[1], "wb") as fh:
                while True:
                    fh.write(b"\\0" * 65536)
        except OSError:
            pass
        return tracker

    tracking.start_tracker = start_then_fill
    sys.exit(main(sys.argv[2:]))
""")


def test_disk_filling_up_while_wandb_writes_is_one_line_not_a_traceback_flood(tmp_path):
    pytest.importorskip("wandb")
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    with tiny_disk(tmp_path / "disk", "40m") as disk:
        args = broken.fast_run_args(data, disk / "run")
        args[args.index("--wandb") + 1] = "offline"
        env = broken.cli_env()
        env.pop("WANDB_MODE", None)
        result = subprocess.run([sys.executable, "-c", FILL_AFTER_WANDB_STARTS, str(disk / "filler"), *args],
                                cwd=broken.REPO, env=env, capture_output=True, text=True, timeout=300)
        line = broken.error_line(result, status=1)
        assert "Logging error" not in result.stderr and len(result.stderr.splitlines()) < 30, result.stderr[-3000:]
        assert "No space left on device" in line
        assert json.loads((disk / "run" / "config.json").read_text())["wandb"]["mode"] == "offline"
