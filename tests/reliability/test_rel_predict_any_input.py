"""engine.predict needs no labels: it predicts nested folders and CSVs carrying labels of other
classes instead of refusing with talk of classes (engine/score/data_scope.py `labels_ignored`)."""
from __future__ import annotations

import csv
import logging

import pytest

from engine.train import main as train_main

from . import broken, cli_in_process


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_any")
    data = broken.good_folder(root / "data", n=30, classes=("mel", "nv"))
    out = root / "run"
    assert train_main(broken.fast_run_args(data, out)) == 0
    return out


def _predict(run, data, out, capsys):
    return cli_in_process.run_cli(capsys, ["--checkpoint", run, "--data", data, "--out", out, "--device", "cpu"],
                                  "engine.predict")


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("layout", ["nested", "one_subfolder"])
def test_predict_recurses_nested_folders(run, tmp_path, capsys, layout):
    folders = ["visit1/cam", "visit2"] if layout == "nested" else ["batch"]
    n = 0
    for f in folders:
        (tmp_path / "new" / f).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "new" / f / f"x{i}.jpg").write_bytes(broken.jpeg(broken.rgb_array(24, i, seed=100 + n)))
            n += 1
    result = _predict(run, tmp_path / "new", tmp_path / "p.csv", capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path / "p.csv")
    assert len(rows) == n and {r["split"] for r in rows} == {"unlabelled"} and {r["label"] for r in rows} == {""}


def test_predict_ignores_another_clinics_label_columns(run, tmp_path, capsys, caplog):
    root = tmp_path / "clinic"
    root.mkdir()
    lines = []
    for i in range(8):
        (root / f"c{i}.jpg").write_bytes(broken.jpeg(broken.rgb_array(24, i, seed=200 + i)))
        lines.append([f"c{i}.jpg", ["benign", "malignant"][i % 2]])
    broken.write_csv(root / "labels.csv", lines, ("file", "label"))
    with caplog.at_level(logging.WARNING):
        result = _predict(run, root / "labels.csv", tmp_path / "p.csv", capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "are not the checkpoint's: labels not used; predicting every one of its 8 readable images" in caplog.text
    assert len(_rows(tmp_path / "p.csv")) == 8


def test_evaluate_still_refuses_other_classes(run, tmp_path, capsys):
    root = broken.good_folder(tmp_path / "other", n=8, classes=("benign", "malignant"), size=40)
    result = cli_in_process.run_cli(capsys, ["--checkpoint", run, "--data", root, "--device", "cpu"], "engine.evaluate")
    assert "do not match the checkpoint's" in broken.error_line(result)
