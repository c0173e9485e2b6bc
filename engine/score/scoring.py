"""The one scoring loop: a model over an evaluation loader, everything kept on the device.

Used by the Trainer (validation, test) and by engine.evaluate / engine.predict through it, so
every figure the project reports comes from the same lines.
"""
from __future__ import annotations

from typing import Callable, ContextManager

import torch

from common.constants import PAD_LABEL
from engine.run.multilabel import finding_confusion
from kernels.confusion import confusion_matrix


@torch.no_grad()
def score(forward: Callable, loader, num_classes: int, autocast: Callable[[], ContextManager],
          multilabel: bool = False):
    """(confusion matrix, probabilities of real rows, labels of real rows), in order, on the device.
    `multilabel`: sigmoid probabilities per finding and a (K, 2, 2) confusion per finding at 0.5
    (engine/run/multilabel.py); unlabelled rows (1-D labels) get probabilities and no confusion."""
    device = loader.device
    total = loader.steps * loader.batch_size
    probs = torch.empty(total, num_classes, device=device)
    labels_all = torch.empty((total, *loader.labels.shape[1:]), dtype=loader.labels.dtype, device=device)
    shape = (num_classes, 2, 2) if multilabel else (num_classes, num_classes)
    cm = torch.zeros(shape, dtype=torch.int64, device=device)
    per_finding = multilabel and loader.labels.ndim == 2
    offset = 0
    for images, labels, *meta in loader:  # meta present only for metadata fusion
        with autocast():
            logits = forward(images, *meta)
        p = logits.float().sigmoid() if multilabel else logits.float().softmax(1)
        n = len(labels)
        probs[offset:offset + n] = p
        labels_all[offset:offset + n] = labels
        if per_finding:
            finding_confusion(labels, p, cm)
        elif not multilabel:
            confusion_matrix(labels, p.argmax(1), num_classes, out=cm)
        offset += n
    real = labels_all[:offset]
    keep = (real[:, 0] if real.ndim == 2 else real) != PAD_LABEL  # data-dependent shape: after the loop, once
    return cm, probs[:offset][keep], labels_all[:offset][keep]
