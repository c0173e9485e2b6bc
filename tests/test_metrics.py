import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from engine.metrics import summarize
from kernels.confusion import confusion_matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 400, 5
    y = rng.choice(c, n, p=[0.6, 0.2, 0.1, 0.07, 0.03])
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y] * rng.uniform(0, 1, (n, 1))
    logits = np.round(logits, 1)  # ties, which AUC must handle like sklearn
    probs = torch.tensor(logits).softmax(1)
    pred = probs.argmax(1)
    labels = torch.tensor(y)
    cm = confusion_matrix(labels, pred, c)
    out = summarize(cm, probs, labels, [str(i) for i in range(c)])
    assert np.array_equal(cm.numpy(), skm.confusion_matrix(y, pred.numpy(), labels=range(c)))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["auc_macro"] == pytest.approx(skm.roc_auc_score(y, probs.numpy(), multi_class="ovr", average="macro"))


def test_padding_rows_are_ignored():
    labels = torch.tensor([0, 1, 1, -1, -1])
    preds = torch.tensor([0, 1, 0, 1, 1])
    assert confusion_matrix(labels, preds, 2).tolist() == [[1, 0], [1, 1]]
