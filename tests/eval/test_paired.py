"""engine.compare's paired differences: aligned by image file, against sklearn, and honest notes."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from engine.score.paired import paired_differences, paired_table


def _run(folder, files, labels, probs, order=None):
    folder.mkdir(parents=True)
    order = np.arange(len(files)) if order is None else order
    np.savez(folder / "test_predictions.npz", files=np.asarray(files)[order], labels=labels[order],
             probs=probs[order].astype(np.float32))
    return folder


def _scores(rng, labels, skill):
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    files = [f"img{i:03d}.jpg" for i in range(300)]
    weak, strong = _scores(rng, labels, 0.5), _scores(rng, labels, 2.0)
    a = _run(tmp_path / "a", files, labels, weak)
    b = _run(tmp_path / "b", files, labels, strong, order=rng.permutation(300))  # another image order
    return a, b, labels, weak, strong


def test_the_difference_is_sklearns_on_the_same_images_whatever_their_order(pair):
    a, b, labels, weak, strong = pair
    rows, why = paired_differences([a, b], ["a", "b"], resamples=400)
    assert why is None and [r["run"] for r in rows] == ["b"]
    d, low, high = rows[0]["balanced_accuracy"]
    expected = balanced_accuracy_score(labels, strong.argmax(1)) - balanced_accuracy_score(labels, weak.argmax(1))
    assert d == pytest.approx(expected, abs=1e-6) and low < d < high and low > 0  # clearly better
    auc = (roc_auc_score(labels, strong, multi_class="ovr", average="macro")
           - roc_auc_score(labels, weak, multi_class="ovr", average="macro"))
    assert rows[0]["auc_macro"][0] == pytest.approx(auc, abs=1e-6)
    assert "b: balanced accuracy +" in paired_table("a", rows, why)


def test_a_run_against_itself_differs_by_exactly_zero(pair):
    a, _, _, _, _ = pair
    rows, why = paired_differences([a, a], ["a", "a2"], resamples=100)
    assert why is None and rows[0]["balanced_accuracy"] == (0.0, 0.0, 0.0)


def test_runs_on_other_images_or_without_predictions_get_a_note_not_a_figure(pair, tmp_path):
    a, _, labels, weak, _ = pair
    other = _run(tmp_path / "other", [f"x{i}.jpg" for i in range(300)], labels, weak)
    rows, why = paired_differences([a, other], ["a", "other"])
    assert rows == [] and why == "the runs were scored on different images"
    (tmp_path / "bare").mkdir()
    rows, why = paired_differences([a, tmp_path / "bare"], ["a", "bare"])
    assert rows == [] and "no test_predictions.npz" in why and "bare" in why
    assert paired_table("a", rows, why).startswith("paired differences: not given (")
