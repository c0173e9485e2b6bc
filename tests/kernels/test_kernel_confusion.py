"""Device confusion matrix against the bincount reference and scikit-learn."""
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from kernels.confusion import confusion_matrix, confusion_reference, merge_across_ranks


def random_pairs(n, c, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    preds = torch.randint(0, c, (n,), generator=g)
    return labels.to(device), preds.to(device)


@pytest.mark.parametrize("n,c", [(1, 2), (37, 7), (1000, 10)])
def test_matches_reference_and_sklearn(n, c):
    labels, preds = random_pairs(n, c, seed=n)
    cm = confusion_matrix(labels, preds, c)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, confusion_reference(labels, preds, c))
    assert cm.tolist() == sk_confusion(labels.numpy(), preds.numpy(), labels=list(range(c))).tolist()


def test_padding_rows_ignored_and_accumulates_into_buffer():
    labels, preds = random_pairs(64, 5, seed=1)
    padded_labels = torch.cat([labels, torch.full((6,), -1)])
    padded_preds = torch.cat([preds, torch.zeros(6, dtype=torch.int64)])
    out = torch.zeros(5, 5, dtype=torch.int64)
    confusion_matrix(padded_labels[:40], padded_preds[:40], 5, out=out)
    confusion_matrix(padded_labels[40:], padded_preds[40:], 5, out=out)
    assert torch.equal(out, confusion_reference(labels, preds, 5))
    assert out.sum() == 64


def test_merge_without_process_group_is_identity():
    labels, preds = random_pairs(50, 3)
    cm = confusion_matrix(labels, preds, 3)
    assert torch.equal(merge_across_ranks(cm.clone()), cm)


@pytest.mark.gpu
def test_cuda_matches_reference():
    labels, preds = random_pairs(100_000, 7, device="cuda")
    assert torch.equal(confusion_matrix(labels, preds, 7).cpu(), confusion_reference(labels.cpu(), preds.cpu(), 7))
