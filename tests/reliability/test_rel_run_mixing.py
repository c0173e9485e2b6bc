"""Runs that cannot silently mix: one writer per --out, resume only on the same data and with
options it can honour, cv folds only reused under their own options, evaluation folders
that never collide, result files readable as the umask allows."""
from __future__ import annotations

import csv
import json
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.run import checkpoint
from engine import cv, evaluate
from engine.train import main as train_main
from tests.helpers import skip_report

from . import broken, cli_in_process

@pytest.fixture
def no_report(monkeypatch):
    skip_report(monkeypatch)  # evaluate's figures: not under test


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


# -- one writer per folder -------------------------------------------------------------------------

# The first run holds the lock as a real `python -m engine.train` does; it trains one epoch
# (a killed run leaves its checkpoint and history behind), then says so and waits to be killed
# instead of training on: the refusal does not depend on what the holder computes meanwhile.
HOLDER = textwrap.dedent("""
    import sys, time
    from engine.train import main  # first: its start-up runs before torch loads
    from engine.run import runner
    real_epoch = runner._train_epoch

    def one_epoch_then_wait(run, state, epoch, stop):
        if epoch == 0:
            return real_epoch(run, state, epoch, stop)
        print("holding", flush=True)
        time.sleep(300)

    runner._train_epoch = one_epoch_then_wait
    sys.exit(main(sys.argv[1:]))
""")


def _spawn_holder(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, args)], cwd=broken.REPO,
                            env=broken.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_on_the_same_out_is_refused_at_once_and_a_killed_holder_blocks_nothing(tmp_path, capfd):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "run"
    first = _spawn_holder(broken.fast_run_args(data, out) + ["--epochs", "2000"])  # busy long after the second starts
    try:
        assert select.select([first.stdout], [], [], 240)[0], "the first run never reached its second epoch"
        assert first.stdout.readline().strip() == "holding", first.stderr.read()[-3000:]
        assert (out / ".lock").read_text().startswith(f"pid {first.pid},")
        t0 = time.monotonic()
        second = cli_in_process.run_cli(capfd, broken.fast_run_args(data, out))
        line = broken.error_line(second)
        assert line.startswith(f"error: {out} is in use by another run (pid {first.pid}, since ")
        assert line.endswith("wait for it to finish or choose another --out")
        assert time.monotonic() - t0 < 60 and first.poll() is None  # refused while the first still runs
        assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2000  # the first's files only
        assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # kill -9 left the lock file (and its checkpoint) behind; the kernel dropped the lock with the process
    assert (out / ".lock").exists()
    third = cli_in_process.run_cli(capfd, broken.fast_run_args(data, out))
    assert third.returncode == 0, third.stderr[-2000:]


def test_the_lock_is_released_when_a_run_ends_so_the_same_process_can_resume(tmp_path):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "run"
    assert train_main(broken.fast_run_args(data, out)) == 0
    assert train_main(["--resume", str(out)]) == 0


# -- resume only on the same data ------------------------------------------------------------------

def _finished_run(tmp_path, n=30):
    data = broken.good_folder(tmp_path / "data", n=n, classes=("a", "b", "c"))
    out = tmp_path / "run"
    assert train_main(broken.fast_run_args(data, out) + ["--epochs", "2"]) == 0
    return data, out


def _add_images(data: Path, count: int) -> None:
    with open(data / "labels.csv", "a", newline="") as fh:
        for i in range(count):
            name = f"images/new{i}.jpg"
            (data / name).write_bytes(broken.jpeg(broken.rgb_array(32, i, seed=500 + i)))
            csv.writer(fh).writerow([name, "abc"[i % 3]])


def _relabel(data: Path, count: int) -> None:
    rows = list(csv.reader(open(data / "labels.csv")))
    for row in rows[1:count + 1]:
        row[1] = {"a": "b", "b": "c", "c": "a"}[row[1]]
    with open(data / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _rewrite_image(data: Path) -> None:
    path = data / "images" / "im004.jpg"
    path.write_bytes(broken.jpeg(broken.rgb_array(32, 2, seed=999), quality=70))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))


def _remove_images(data: Path, count: int) -> None:
    rows = list(csv.reader(open(data / "labels.csv")))
    for row in rows[1:count + 1]:
        (data / row[0]).unlink()


@pytest.mark.parametrize("change, expected", [
    (lambda d: _add_images(d, 3), "3 files added"),
    (lambda d: _relabel(d, 2), "2 labels changed"),
    (_rewrite_image, "1 files changed (size or modification time)"),
    (lambda d: _remove_images(d, 2), "2 files removed"),
])
def test_resume_on_changed_data_is_refused_naming_what_changed(tmp_path, capsys, change, expected):
    data, out = _finished_run(tmp_path)
    before = checkpoint.load(out)
    assert before["data_identity"]["source"] == str(data.resolve())
    change(data)
    capsys.readouterr()
    assert train_main(["--resume", str(out), "--epochs", "3"]) == 2
    [line] = _errors(capsys)
    assert line.startswith(f"error: --resume {out}: the data changed since this run started ({expected}")
    assert line.endswith("start a new run with another --out")
    assert checkpoint.load(out)["state"]["epoch"] == 2  # nothing trained on the changed data


def test_images_added_between_a_run_and_its_resume_from_the_cli(tmp_path, capfd):
    data, out = _finished_run(tmp_path)
    _add_images(data, 6)
    line = broken.error_line(cli_in_process.run_cli(capfd, ["--resume", out, "--epochs", "3"]))
    assert "the data changed since this run started (6 files added" in line and "images in another split" in line


# -- options given with --resume -------------------------------------------------------------------

def test_more_epochs_on_resume_extend_the_run_and_say_how(tmp_path, caplog):
    data, out = _finished_run(tmp_path)
    lr_end = json.loads((out / "history.jsonl").read_text().splitlines()[-1])["lr"]
    caplog.set_level("INFO", logger="medtrain.train")
    assert train_main(["--resume", str(out), "--epochs", "4"]) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and checkpoint.load(out)["config"]["train"]["epochs"] == 4
    assert "--epochs 4 (was 2): cosine schedule re-planned from step" in caplog.text
    assert all(h["lr"] <= lr_end * 1.0001 for h in history[2:])  # continues from the finished rate: no jump up
    assert checkpoint.load(out)["schedule"]["extensions"] == [[4, int(checkpoint.load(out)["schedule"]["extensions"][0][1])]]


@pytest.mark.parametrize("args, expected", [
    (["--lr", "0.1"], "cannot change --lr 0.1 (the run has 0.002)"),
    (["--model", "seedcnn"], "cannot change --model seedcnn (the run has mlp)"),
    (["--batch-size", "4", "--seed", "5"], "cannot change --batch-size 4 (the run has 8); --seed 5 (the run has 0)"),
    (["--epochs", "1"], "--epochs 1 is fewer than the 2 epoch(s) this run has already trained"),
    (["--out", "elsewhere"], "cannot change --out elsewhere (the run continues in"),
])
def test_options_resume_cannot_honour_are_refused_never_ignored(tmp_path, capsys, args, expected):
    _, out = _finished_run(tmp_path)
    capsys.readouterr()
    assert train_main(["--resume", str(out)] + args) == 2
    [line] = _errors(capsys)
    assert line.startswith(f"error: --resume {out}") and expected in line


def test_options_equal_to_the_runs_or_safe_are_accepted(tmp_path):
    data, out = _finished_run(tmp_path)
    assert train_main(["--resume", str(out), "--lr", "0.002", "--data", str(data), "--model", "mlp",
                       "--train.patience", "3", "--data.workers", "2", "--train.progress", "off"]) == 0
    used = json.loads((out / "config.json").read_text())  # nothing left to train: no new checkpoint
    assert used["train"]["patience"] == 3 and used["data"]["workers"] == 2


def test_the_extended_schedule_continues_from_the_current_rate_down_to_the_floor():
    from engine.options.config import ScheduleConfig
    from engine.options.resume_options import multipliers
    from engine.run.schedules import lr_multipliers
    for name in ("cosine", "onecycle"):
        cfg = ScheduleConfig(name=name, warmup_epochs=1.0, min_lr_ratio=0.01)
        old = lr_multipliers(cfg, 10, 4)
        for step in (25, 40):  # mid-run and finished
            table = multipliers({"epochs0": 4, "extensions": [[7, step]]}, cfg, 10)
            assert len(table) == 71 and table[:step].equal(old[:step])
            assert float(table[step]) == pytest.approx(float(old[step]))  # no jump
            assert (table[step:].diff() <= 1e-7).all()  # then only down
            assert float(table[70]) == pytest.approx(0.01, abs=1e-6)
        early = multipliers({"epochs0": 4, "extensions": [[8, 5]]}, cfg, 10)  # still warming up: planned anew
        assert early[5:].equal(lr_multipliers(cfg, 10, 8)[5:])
        twice = {"epochs0": 4, "extensions": [[6, 30], [9, 50]]}
        assert multipliers(twice, cfg, 10).equal(multipliers(twice, cfg, 10))  # stored plan: same table on resume


# -- cv folders ------------------------------------------------------------------------------------

CV = ["--model", "mlp", "--image-size", "16", "--batch-size", "8", "--epochs", "1", "--device", "cpu",
      "--wandb", "disabled", "--train.progress", "off", "--data.workers", "1"]


def test_cv_rerun_with_other_options_is_refused_and_the_same_options_reuse_the_folds(tmp_path, capsys, monkeypatch):
    skip_report(monkeypatch)
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "cv"
    assert cv.main(["--folds", "2", "--data", str(data), "--out", str(out)] + CV) == 0
    recorded = json.loads((out / "cv_options.json").read_text())
    assert recorded["options"]["folds"] == 2 and recorded["options"]["train.seed"] == 0
    first = (out / "fold0" / "metrics.json").read_text()
    capsys.readouterr()
    assert cv.main(["--folds", "3", "--data", str(data), "--out", str(out)] + CV) == 2
    [line] = _errors(capsys)
    assert line == (f"error: engine.cv: {out} holds folds trained with other options (--folds 2 there, 3 now); "
                    "use another --out, or the same options to finish its folds")
    assert cv.main(["--folds", "2", "--data", str(data), "--out", str(out), "--seed", "4"] + CV) == 2
    assert "--train.seed 0 there, 4 now" in _errors(capsys)[0]
    assert cv.main(["--folds", "2", "--data", str(data), "--out", str(out)] + CV[:-2] + ["--data.workers", "2"]) == 0
    assert (out / "fold0" / "metrics.json").read_text() == first  # reused, not retrained
    _add_images(data, 2)
    capsys.readouterr()
    assert cv.main(["--folds", "2", "--data", str(data), "--out", str(out)] + CV) == 2
    assert "the data changed since the folds" in _errors(capsys)[0]


def test_cv_folder_from_before_the_record_is_refused(tmp_path, capsys):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    (tmp_path / "cv" / "fold0").mkdir(parents=True)
    (tmp_path / "cv" / "fold0" / "metrics.json").write_text("{}")
    assert cv.main(["--folds", "2", "--data", str(data), "--out", str(tmp_path / "cv")] + CV) == 2
    assert "holds finished folds but no cv_options.json" in _errors(capsys)[0]


# -- evaluation folders ----------------------------------------------------------------------------

def test_evaluations_of_two_folders_with_the_same_name_never_collide(tmp_path, no_report):
    data, run = _finished_run(tmp_path)
    # other sites, other bytes (size 40): images with the run's own content would be recognised as its own
    site_a = broken.good_folder(tmp_path / "siteA" / "test", n=12, classes=("a", "b", "c"), size=40)
    site_b = broken.good_folder(tmp_path / "siteB" / "test", n=18, classes=("a", "b", "c"), size=40)
    for site in (site_a, site_b, site_a):  # the third evaluation redoes the first: its own folder again
        assert evaluate.main(["--checkpoint", str(run), "--data", str(site)]) == 0
    assert sorted(p.name for p in run.glob("eval-*")) == ["eval-test", "eval-test-2"]
    first = json.loads((run / "eval-test" / "metrics.json").read_text())
    second = json.loads((run / "eval-test-2" / "metrics.json").read_text())
    assert (first["data"], first["test.n"]) == (str(site_a), 12)
    assert (second["data"], second["test.n"]) == (str(site_b), 18)


def test_an_evaluation_folder_in_use_is_passed_over(tmp_path, no_report):
    from common import run_lock
    data, run = _finished_run(tmp_path)
    other = broken.good_folder(tmp_path / "x" / "data", n=12, classes=("a", "b", "c"))
    (run / "eval-data").mkdir()  # another evaluation of data named "data" is writing here right now
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(120)", str(run / "eval-data" / run_lock.NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert evaluate.main(["--checkpoint", str(run), "--data", str(other)]) == 0
        assert (run / "eval-data-2" / "metrics.json").exists() and not (run / "eval-data" / "metrics.json").exists()
    finally:
        holder.kill()
        holder.communicate()


# -- file modes follow the umask -------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    from common.atomic import atomic_write_json
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "metrics.json", {"a": 1})
        atomic_write_json(tmp_path / "metrics.json", {"a": 2})  # replacing keeps the umask's mode too
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_file_of_a_run_is_readable_as_the_umask_allows(tmp_path, umask):
    data = broken.good_folder(tmp_path / "data", n=24, classes=("a", "b"))
    out = tmp_path / "run"
    old = os.umask(umask)  # the whole process's, loader workers included, as a shell's umask would be
    try:
        status = cli_in_process.call(broken.fast_run_args(data, out, report=True))
    finally:
        os.umask(old)
    assert status == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"checkpoint.pt", "metrics.json", "config.json", "history.jsonl",
                                        "test_predictions.npz", "confusion_matrix.png", "README.md"}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
