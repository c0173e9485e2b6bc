"""A drawn split that cannot support a figure says so before training, and the figure is written
as not computable, never as a number that answers another question (loaders/split_audit.py,
engine/score/metric_validity.py)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from engine.score import metric_validity
from loaders import split_audit
from loaders.datasets import load_dataset

from . import broken, cli_in_process


def _folder(root, labels, groups=None):
    (root / "images").mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        name = f"images/im{i:03d}.jpg"
        (root / name).write_bytes(broken.jpeg(broken.rgb_array(16, ord(label[0]), seed=i)))
        rows.append([name, label] + ([groups[i]] if groups else []))
    broken.write_csv(root / "labels.csv", rows, ("file", "label", "patient_id") if groups else ("file", "label"))
    return root


def _run(data, out, capsys, *extra, report=False):
    """A tiny run in-process (tests/reliability/cli_in_process.py); the report only where it is read."""
    result = cli_in_process.run_cli(capsys, broken.fast_run_args(data, out, report=report) + list(extra))
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / "metrics.json").read_text())


def test_class_absent_from_test_is_not_scored_as_if_present(tmp_path, capsys, caplog):
    # 3 'mel' among 40 'nv': stratified dealing leaves none for test
    data = _folder(tmp_path / "data", ["nv"] * 40 + ["mel"] * 3)
    with caplog.at_level(logging.WARNING):
        result, m = _run(data, tmp_path / "run", capsys, report=True)  # the report carries the warnings
    assert m["test.support.mel"] == 0
    assert m["test.balanced_accuracy"] is None and m["test.f1_macro"] is None and m["test.auc_macro"] is None
    assert m["test.balanced_accuracy_over_present"] is not None
    assert "class(es) mel absent from test" in m["test.note"]
    assert any("'mel' absent from the test split" in w for w in m["data.warnings"])
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("absent from the test split" in line for line in said)  # logged before training (stderr under python -m)
    assert "balanced_accuracy n/a" in result.stdout
    readme = (tmp_path / "run" / "report" / "README.md").read_text()
    assert "## Warnings" in readme and "absent from the test split" in readme


@pytest.mark.parametrize("extra", [["--data.val_fraction", "0"], []])
def test_selection_without_validation_keeps_the_last_epoch_and_says_so(tmp_path, capsys, extra):
    n = 40 if extra else 10  # explicit val_fraction 0, or ten images whose val split rounds to nothing
    data = _folder(tmp_path / "data", ["a", "b"] * (n // 2))
    result, m = _run(data, tmp_path / "run", capsys, "--epochs", "3", "--train.patience", "1", *extra)
    assert m["val.n"] == 0 and m["epochs"] == 3 and m["best_epoch"] == 3  # no early stop on a flat, empty val
    assert m["selection"].startswith("last epoch: no validation images")
    assert any(w.startswith("the val split is empty") for w in m["data.warnings"])
    assert m["val.balanced_accuracy"] is None and m["val.note"].startswith("no val images")


def test_a_group_that_forces_the_fractions_off_is_named(tmp_path):
    labels = ["a", "b"] * 20
    groups = ["p0"] * 24 + [f"p{i}" for i in range(1, 17)]  # one patient owns 60% of the images
    _folder(tmp_path / "data", labels, groups)
    checked = 0
    for seed in range(4):  # whichever part the big patient lands in, the audit says so
        ds = load_dataset(broken.data_cfg(tmp_path / "data"), seed=seed)
        lines = split_audit.audit(ds, 0.15, 0.15)
        where = next(p for p in ("train", "val", "test") if "p0" in set(ds.split(p).groups.tolist()))
        if where != "train":
            checked += 1
            assert any(f"the {where} split holds" in w and "largest group ('p0') holds 60%" in w for w in lines), lines
    assert checked


def test_a_test_split_too_small_for_a_figure_is_said(tmp_path):
    ds = load_dataset(broken.data_cfg(_folder(tmp_path / "data", ["a", "b"] * 15)))
    lines = split_audit.audit(ds, 0.15, 0.15)
    assert any(w.startswith(f"the test split is too small for a figure ({len(ds.test)} images") for w in lines)
    big = load_dataset(broken.data_cfg(_folder(tmp_path / "big", ["a", "b"] * 100)))
    assert not any("too small" in w for w in split_audit.audit(big, 0.15, 0.15))


def test_present_class_figure_kept_under_its_own_name():
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 1, 1, 1, 0])
    classes = ["a", "b", "c"]
    present = balanced_accuracy_score(y_true, y_pred)
    m = {"test.balanced_accuracy": present, "test.balanced_accuracy_ci_low": 0.1, "test.f1_macro": 0.5,
         "test.sensitivity.c": 0.0, "test.sensitivity.a": 0.5, "test.uncorrected.balanced_accuracy": present}
    metric_validity.mark(m, "test", y_true, classes)
    assert m["test.balanced_accuracy"] is None and m["test.balanced_accuracy_ci_low"] is None
    assert m["test.uncorrected.balanced_accuracy"] is None and m["test.sensitivity.c"] is None
    assert m["test.sensitivity.a"] == 0.5 and m["test.balanced_accuracy_over_present"] == pytest.approx(present)
    complete = {"test.balanced_accuracy": 0.7}
    metric_validity.mark(complete, "test", np.array([0, 1, 2]), classes)
    assert complete == {"test.balanced_accuracy": 0.7}


def test_given_splits_are_not_judged_by_the_fractions(tmp_path):
    # cv folds hand the run splits of their own sizes: the fraction check is for drawn splits only
    from loaders.datasets import with_splits
    ds = load_dataset(broken.data_cfg(_folder(tmp_path / "data", ["a", "b"] * 40)))
    pool = np.arange(len(ds.train))
    folded = with_splits(ds, ds.train.subset(pool[:20]), ds.train.subset(pool[20:30]), ds.train.subset(pool[30:]))
    assert not any("against a requested" in w for w in split_audit.audit(folded, 0.15, 0.15))
    drawn = load_dataset(broken.data_cfg(tmp_path / "data", val_fraction=0.3, test_fraction=0.3))
    assert not any("against a requested" in w for w in split_audit.audit(drawn, 0.3, 0.3))
    assert any("val split holds" in w for w in split_audit.audit(drawn, 0.05, 0.3))
