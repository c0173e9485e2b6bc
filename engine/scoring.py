"""The one scoring loop: a model over an evaluation loader, everything kept on the device.

Used by the Trainer (validation, test) and by engine.evaluate / engine.predict through it, so
every figure the project reports comes from the same lines.
"""
from __future__ import annotations

from typing import Callable, ContextManager

import torch

from common.constants import PAD_LABEL
from kernels.confusion import confusion_matrix


@torch.no_grad()
def score(forward: Callable, loader, num_classes: int, autocast: Callable[[], ContextManager]):
    """(confusion matrix, probabilities of real rows, labels of real rows), in order, on the device."""
    device = loader.device
    total = loader.steps * loader.batch_size
    probs = torch.empty(total, num_classes, device=device)
    labels_all = torch.empty(total, dtype=torch.int64, device=device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    offset = 0
    for images, labels, *meta in loader:  # meta present only for metadata fusion
        with autocast():
            logits = forward(images, *meta)
        p = logits.float().softmax(1)
        n = len(labels)
        probs[offset:offset + n] = p
        labels_all[offset:offset + n] = labels
        confusion_matrix(labels, p.argmax(1), num_classes, out=cm)
        offset += n
    keep = labels_all[:offset] != PAD_LABEL  # data-dependent shape: after the loop, once
    return cm, probs[:offset][keep], labels_all[:offset][keep]
