"""Every metric of engine.score.metrics against scikit-learn (or a direct numpy definition)."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from engine.score.metrics import (bootstrap_indices, bootstrap_intervals, bootstrap_scores, calibration_bins,
                            expected_calibration_error, summarize)
from engine.output.plots import pr_points, roc_rates
from kernels.confusion import confusion_matrix

CLASSES = ["a", "b", "c", "d", "e"]


def scored(seed: int, n: int = 300, c: int = 5, absent: int | None = None):
    rng = np.random.default_rng(seed)
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    if absent is not None:
        p[absent] = 0
        p /= p.sum()
    y = rng.choice(c, n, p=p)
    logits = rng.normal(size=(n, c)) + 1.8 * np.eye(c)[y] * rng.uniform(0, 1, (n, 1))
    probs = torch.tensor(np.round(logits, 1)).float().softmax(1)  # rounding makes ties, as real scores have
    labels = torch.tensor(y)
    return probs, labels, confusion_matrix(labels, probs.argmax(1), c)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_summary_metric_equals_sklearn(seed):
    probs, labels, cm = scored(seed)
    y, pred, p = labels.numpy(), probs.argmax(1).numpy(), probs.double().numpy()
    out = summarize(cm, probs, labels, CLASSES)
    approx = lambda v: pytest.approx(v, rel=1e-9, abs=1e-12)
    assert out["accuracy"] == approx(skm.accuracy_score(y, pred))
    assert out["balanced_accuracy"] == approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert out[f"precision_{avg}"] == approx(prec)
        assert out[f"recall_{avg}"] == approx(rec)
        assert out[f"f1_{avg}"] == approx(f1)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    sk_cm = skm.confusion_matrix(y, pred, labels=range(5))
    for c, name in enumerate(CLASSES):
        tn = sk_cm.sum() - sk_cm[c].sum() - sk_cm[:, c].sum() + sk_cm[c, c]
        assert out[f"sensitivity.{name}"] == approx(rec[c])
        assert out[f"specificity.{name}"] == approx(tn / (tn + sk_cm[:, c].sum() - sk_cm[c, c]))
        assert out[f"precision.{name}"] == approx(prec[c])
        assert out[f"f1.{name}"] == approx(f1[c])
        assert out[f"support.{name}"] == support[c]
        assert out[f"auc.{name}"] == approx(skm.roc_auc_score(y == c, p[:, c]))
    assert out["auc_macro"] == approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=range(5)), rel=1e-6)
    assert out["n"] == len(y)


def test_absent_class_is_left_out_of_macro_auc_and_balanced_accuracy():
    probs, labels, cm = scored(2, absent=3)
    y, pred, p = labels.numpy(), probs.argmax(1).numpy(), probs.double().numpy()
    out = summarize(cm, probs, labels, CLASSES)
    present = [c for c in range(5) if (y == c).any()]
    assert np.isnan(out["auc.d"])
    assert out["auc_macro"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present]))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_ece_matches_its_definition():
    probs, labels, _ = scored(3)
    conf, pred = probs.max(1).values.double().numpy(), probs.argmax(1).numpy()
    correct = pred == labels.numpy()
    bins = np.minimum((conf * 15).astype(int), 14)
    expected = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                   for b in range(15) if (bins == b).any())
    assert float(expected_calibration_error(probs, labels)) == pytest.approx(expected, rel=1e-6)
    count, mean_conf, acc = calibration_bins(probs, labels)
    assert int(count.sum()) == len(labels) and float(acc.max()) <= 1


def test_perfectly_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=conf.shape) < conf
    probs = torch.tensor(np.stack([conf, 1 - conf], 1))
    labels = torch.tensor(np.where(correct, 0, 1))
    assert float(expected_calibration_error(probs, labels)) < 0.02


def test_each_bootstrap_resample_equals_sklearn_on_the_same_rows():
    probs, labels, _ = scored(5)
    y, pred, p = labels.numpy(), probs.argmax(1).numpy(), probs.double().numpy()
    idx = bootstrap_indices(len(y), 12, "cpu")
    bal, auc = bootstrap_scores(probs, labels, 5, idx)
    for b, rows in enumerate(idx.numpy()):
        assert float(bal[b]) == pytest.approx(skm.balanced_accuracy_score(y[rows], pred[rows]), rel=1e-9)
        assert float(auc[b]) == pytest.approx(skm.roc_auc_score(y[rows], p[rows], multi_class="ovr"), rel=1e-6)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    probs, labels, cm = scored(6, n=400)
    out = summarize(cm, probs, labels, CLASSES, bootstrap=300)
    for key in ("balanced_accuracy", "auc_macro"):
        assert out[f"{key}_ci_low"] < out[key] < out[f"{key}_ci_high"]
        assert out[f"{key}_ci_high"] - out[f"{key}_ci_low"] < 0.25
    again = bootstrap_intervals(probs, labels, 5, 300)
    assert float(again["auc_macro_ci_low"]) == out["auc_macro_ci_low"]
    # More data, narrower interval: the intervals respond to sample size as they should.
    big_probs, big_labels, _ = scored(6, n=3000)
    wide = out["balanced_accuracy_ci_high"] - out["balanced_accuracy_ci_low"]
    narrow = bootstrap_intervals(big_probs, big_labels, 5, 300)
    assert float(narrow["balanced_accuracy_ci_high"] - narrow["balanced_accuracy_ci_low"]) < wide


def test_report_curves_match_sklearn():
    probs, labels, _ = scored(7)
    y, p = labels.numpy(), probs.double().numpy()
    for c in range(5):
        fpr, tpr = roc_rates(p[:, c], y == c)
        sk_fpr, sk_tpr, _ = skm.roc_curve(y == c, p[:, c], drop_intermediate=False)
        assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
        assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y == c, p[:, c]))
        recall, precision, ap = pr_points(p[:, c], y == c)
        assert ap == pytest.approx(skm.average_precision_score(y == c, p[:, c]))
        sk_p, sk_r, _ = skm.precision_recall_curve(y == c, p[:, c], drop_intermediate=False)
        assert np.allclose(recall[1:], sk_r[::-1][1:]) and np.allclose(precision[1:], sk_p[::-1][1:])
