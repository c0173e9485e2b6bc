"""A run knows its own data by content, not by path (common/data_identity.py `contents`,
engine/score/data_scope.py `without_seen`), and a finished run's folder is not a new run's."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import skip_report

from . import broken, cli_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run shared by the file, trained in-process; tests that change a run copy it first."""
    root = tmp_path_factory.mktemp("identity")
    data = broken.good_folder(root / "data", n=50, classes=("a", "b"))
    out = root / "run"
    assert cli_in_process.call(broken.fast_run_args(data, out)) == 0
    return data, out, json.loads((out / "metrics.json").read_text())


@pytest.fixture
def cli(capfd):
    return lambda args, module="engine.train": cli_in_process.run_cli(capfd, args, module)


@pytest.fixture
def evaluate(cli, monkeypatch):
    skip_report(monkeypatch)  # the figures: not under test, most of the cost
    return lambda ckpt, data, out, *extra: cli(["--checkpoint", ckpt, "--data", data, "--out", out, "--device", "cpu",
                                                 *extra], module="engine.evaluate")


@pytest.mark.parametrize("how", ["csv", "byte_copy"])
def test_evaluate_recognises_the_runs_own_images_whatever_the_path(trained, evaluate, tmp_path, how):
    data, run, train_metrics = trained
    if how == "csv":
        given = data / "labels.csv"
    else:  # a plain copy: new paths, new modification times, the same bytes
        given = tmp_path / "copy"
        shutil.copytree(data, given, copy_function=shutil.copy)
    result = evaluate(run, given, tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["test.n"] == train_metrics["test.n"]  # only the run's test images: none that trained or selected it
    seen = 50 - train_metrics["test.n"]
    assert f"{seen} of 50 images have the content of images that trained or selected this model" in result.stderr


def test_an_explicit_split_all_is_scored_but_flagged(trained, evaluate, tmp_path):
    data, run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copy)
    result = evaluate(run, copy, tmp_path / "eval", "--split", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test.n"] == 50
    assert "scored anyway, as --split all asks; these figures are not a test" in result.stderr


def test_other_images_are_scored_whole(trained, evaluate, tmp_path):
    _, run, _ = trained
    other = broken.good_folder(tmp_path / "other", n=12, classes=("a", "b"), size=40)  # other bytes
    result = evaluate(run, other, tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test.n"] == 12
    assert "content of images" not in result.stderr


def test_a_finished_run_folder_is_refused_for_a_new_run_and_the_hint_works(trained, cli, tmp_path):
    data, run, _ = trained
    out = tmp_path / "run"
    shutil.copytree(run, out)  # the resume below changes it
    other = broken.good_folder(tmp_path / "other", n=30, classes=("a", "b"), size=40)
    line = broken.error_line(cli(broken.fast_run_args(other, out)))
    assert line == (f"error: --out {out} holds a finished run (metrics.json); train it further with "
                    f"--resume {out} --epochs N (more epochs than it has), or choose another --out for a new run")
    assert not (out / "data_skipped.json").exists()
    followed = cli(["--resume", out, "--epochs", "2", "--device", "cpu", "--wandb", "disabled",
                    "--train.progress", "off"])
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_an_npz_byte_copy_is_the_runs_own_data(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from common import data_identity
    from engine.score import data_scope
    original, copy, other = tmp_path / "a.npz", tmp_path / "copy" / "b.npz", tmp_path / "c.npz"
    np.savez(original, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.arange(4) % 2)
    copy.parent.mkdir()
    shutil.copy(original, copy)
    np.savez(other, train_images=np.ones((4, 8, 8), np.uint8), train_labels=np.arange(4) % 2)
    restored = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(path=str(original))), data_source=str(original),
                               data_sha256=data_identity.sha256(original))
    assert data_scope.is_own_data(restored, str(copy)) and data_scope.default_split(restored, str(copy)) == "test"
    assert not data_scope.is_own_data(restored, str(other))


def test_only_training_images_under_another_path_are_refused_and_the_hint_works(trained, evaluate, tmp_path):
    from pathlib import Path

    from loaders.datasets import load_dataset
    data, run, train_metrics = trained
    test_names = {Path(f).name for f in load_dataset(broken.data_cfg(data)).test.files}
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copy)
    rows = [line for line in (copy / "labels.csv").read_text().splitlines()[1:] if Path(line.split(",")[0]).name
            not in test_names]
    (copy / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    line = broken.error_line(evaluate(run, copy, tmp_path / "eval"))
    assert f"{len(rows)} of {len(rows)} images have the content of images that trained or selected" in line
    assert "nothing is left to score" in line
    hinted = line.rsplit("--data ", 1)[1]
    followed = evaluate(run, hinted, tmp_path / "eval2")
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert json.loads((tmp_path / "eval2" / "metrics.json").read_text())["test.n"] == train_metrics["test.n"]
