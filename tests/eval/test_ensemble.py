"""engine.cv end to end on one shared cross-validation: its folds and summary, the folder as an
ensemble in engine.predict / engine.evaluate, a fold scored on its own test split, and TTA
following the run's setting."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from engine import cv, evaluate, predict
from engine.output import run_report
from engine.score import decisions, ensemble
from tests.helpers import tiny_args, write_jpegs

TINY = tiny_args("mlp")


class CvRun(NamedTuple):
    data: Path           # what the cv trained on
    other: Path          # other images with the same classes, for the ensemble
    out: Path            # the cv folder
    printed: str         # what engine.cv printed
    reports: list[Path]  # the run folders whose report the folds asked for, in order


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> CvRun:
    """One 2-fold cv for every test here, as a user's runs: the plan (each fold planned from its own
    data) and each fold's report. Tests read it; none writes into it."""
    root = tmp_path_factory.mktemp("ens")
    data = write_jpegs(root / "data", n=48, size=24)
    other = write_jpegs(root / "other", n=30, size=24, seed=1)
    out = root / "cv"
    printed, reports = io.StringIO(), []
    draw = run_report.build_or_warn

    def draw_the_first(run_dir):  # each fold asks; fold0's report is drawn, to show a fold's folder suffices
        reports.append(Path(run_dir))
        return draw(run_dir) if len(reports) == 1 else True

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(run_report, "build_or_warn", draw_the_first)
        assert cv.main(["--folds", "2", "--data", str(data), "--out", str(out), "--tta"] + TINY) == 0
    return CvRun(data, other, out, printed.getvalue(), reports)


def test_cv_runs_each_fold_and_summarizes(cv_run):
    out = cv_run.out
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 2 and sum(summary["fold_sizes"]) == 48
    assert all((out / fold / "metrics.json").exists() for fold in ("fold0", "fold1"))
    assert cv_run.reports == [out / "fold0", out / "fold1"] and (out / "fold0" / "report" / "README.md").exists()
    bal = summary["metrics"]["test.balanced_accuracy"]
    assert bal["mean"] == pytest.approx(np.mean(bal["values"])) and bal["std"] == pytest.approx(np.std(bal["values"], ddof=1))
    md = (out / "cv_summary.md").read_text()
    assert "test.auc_macro" in summary["metrics"] and "| test.auc_macro |" in md
    assert "`mlp` at 24 px, 1 epoch" in md  # what the folds ran, from their config.json
    assert "cv test.balanced_accuracy" in cv_run.printed


def test_cv_without_folds_is_a_one_line_error(tmp_path, capsys):
    assert cv.main(["--data", str(write_jpegs(tmp_path / "d", n=6, size=16))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--folds" in err[0], err


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _probs(rows):
    return np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])


def test_predict_on_a_cv_folder_averages_the_folds_corrected_probabilities(cv_run, tmp_path):
    other, out = cv_run.other, cv_run.out
    assert predict.main(["--checkpoint", str(out), "--data", str(other), "--out", str(tmp_path / "ens.csv")]) == 0
    ens = _rows(tmp_path / "ens.csv")
    folds = []
    for i in range(2):
        assert predict.main(["--checkpoint", str(out / f"fold{i}"), "--data", str(other),
                             "--out", str(tmp_path / f"f{i}.csv")]) == 0
        folds.append(_rows(tmp_path / f"f{i}.csv"))
    assert [r["file"] for r in ens] == [r["file"] for r in folds[0]] and len(ens) == 30
    mean = np.mean([_probs(f) for f in folds], 0)  # each fold's CSV: its own temperature and tau applied
    assert np.allclose(_probs(ens), mean, atol=2e-6)
    classes = [k[2:] for k in ens[0] if k.startswith("p_")]
    assert [r["prediction"] for r in ens] == [classes[i] for i in _probs(ens).argmax(1)]


def test_evaluate_on_a_cv_folder_scores_the_ensemble_with_the_runs_tta(cv_run, tmp_path, no_report_figures):
    other, out = cv_run.other, cv_run.out
    assert predict.main(["--checkpoint", str(out), "--data", str(other), "--out", str(tmp_path / "p.csv")]) == 0
    rows = _rows(tmp_path / "p.csv")
    assert evaluate.main(["--checkpoint", str(out), "--data", str(other), "--out", str(tmp_path / "e")]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["ensemble_folds"] == 2 and m["test.n"] == 30 and m["tta"] is True  # the folds trained with --tta
    y, pred = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert m["test.accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["test.balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert "test.balanced_accuracy_ci_low" in m and "test.ece_uncalibrated" in m
    assert evaluate.main(["--checkpoint", str(out), "--data", str(other), "--no-tta", "--out", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["tta"] is False
    assert no_report_figures == [tmp_path / "e", tmp_path / "n"]


def test_a_fold_checkpoint_scores_its_own_test_split(cv_run, tmp_path, no_report_figures):
    data, out = cv_run.data, cv_run.out
    for i in range(2):
        trained = json.loads((out / f"fold{i}" / "metrics.json").read_text())
        assert evaluate.main(["--checkpoint", str(out / f"fold{i}"), "--data", str(data),
                              "--out", str(tmp_path / str(i))]) == 0
        m = json.loads((tmp_path / str(i) / "metrics.json").read_text())
        assert m["split"] == "test" and m["test.n"] == trained["test.n"]
        for key in ("test.accuracy", "test.balanced_accuracy", "test.auc_macro", "test.ece"):
            assert m[key] == pytest.approx(trained[key], abs=1e-6), key
    assert no_report_figures == [tmp_path / "0", tmp_path / "1"]


def test_the_ensemble_is_refused_on_its_own_data_and_with_unfinished_folds(cv_run, tmp_path, capsys):
    data, other, out = cv_run.data, cv_run.other, cv_run.out
    assert evaluate.main(["--checkpoint", str(out), "--data", str(data)]) == 2
    assert "trained 1 of the 2 fold models" in capsys.readouterr().err
    partial = tmp_path / "partial"
    (partial / "fold0").mkdir(parents=True)
    (partial / "cv_options.json").write_text(json.dumps({"options": {"folds": 3}}))
    assert predict.main(["--checkpoint", str(partial), "--data", str(other), "--out", str(tmp_path / "x.csv")]) == 2
    assert "3 of 3 folds not finished (fold0, fold1, fold2)" in capsys.readouterr().err


def test_a_binary_ensemble_applies_the_mean_threshold_to_the_mean_probability():
    probs = [torch.tensor([[0.7, 0.3], [0.4, 0.6]]), torch.tensor([[0.5, 0.5], [0.8, 0.2]])]
    rules = [{"tau": 0.0, "temperature": 2.0, "log_prior": [0.0, 0.0], "threshold": 0.2},
             {"tau": 0.0, "temperature": 1.0, "log_prior": [0.0, 0.0], "threshold": 0.4}]
    mean = ensemble.mean_probabilities(probs, rules)
    by_hand = (decisions.calibrated(probs[0], rules[0]) + probs[1]) / 2
    assert torch.allclose(mean, by_hand)
    rule = ensemble.combined_decision(rules)
    assert rule["threshold"] == pytest.approx(0.3) and rule["ensemble"]["temperatures"] == [2.0, 1.0]
    assert torch.equal(decisions.decide(mean, rule), (by_hand[:, 1] >= 0.3).long())
    assert "threshold" not in ensemble.combined_decision([rules[0], {"tau": 0.0}])
